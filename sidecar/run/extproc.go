package run

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"medmesh/api/wire"
	"medmesh/internal/auditlog"
	"medmesh/sidecar/audit"
	"medmesh/sidecar/extproc"
	"medmesh/sidecar/phi"
	"medmesh/sidecar/sched"
)

// ExtProc configures the PHI extension: the ext_proc server Envoy calls
// for every request, and its HTTP /healthz, /readyz and /metrics.
type ExtProc struct {
	// Listen is the ext_proc gRPC address (host:port or unix:///path);
	// HealthListen the HTTP address of the health and metrics endpoints.
	Listen, HealthListen string
	// Rules is the operator's rule file (YAML), reloaded when it changes
	// (checked every RulesPoll) and on SIGHUP; empty: built-in rules.
	Rules     string
	RulesPoll time.Duration
	// AuditLog is the HIPAA audit trail; empty: PHI requests are not
	// audited (and a warning says so). AuditKeyFile holds the HMAC key
	// for patient references (empty: a random key per run).
	// AuditDurability is "sync" or "batch"; the trail rotates at
	// AuditMaxBytes.
	AuditLog, AuditKeyFile, AuditDurability string
	AuditMaxBytes                           int64
	// Limit is the number of requests admitted at once; Adaptive adapts
	// it to the service's latency, starting there.
	Limit    int
	Adaptive bool
	// TrustDomain is the SPIFFE trust domain of the service's identity
	// in audit records; Site, at an edge site, is part of that identity
	// (api/wire: .../svc/<service>/site/<site>).
	TrustDomain string
	Site        string
}

// startExtProc starts the extension and returns a channel that yields
// its terminal error (nil after ctx ends). It acts for the whole process
// (the GC setting, SIGHUP), which `medmesh sidecar` is.
func startExtProc(ctx context.Context, x ExtProc, service, nodeID, namespace string, log *slog.Logger) (<-chan error, error) {
	if os.Getenv("GOGC") == "" {
		// Every request waits on this process; its heap is small (tens of
		// MiB), so fewer GC cycles are worth the memory: the benchmark's
		// p99 overhead fell from ~3 ms to ~1.8 ms at GOGC=400.
		debug.SetGCPercent(400)
	}
	rules := phi.NewRules()
	if x.Rules != "" {
		if err := rules.Load(x.Rules); err != nil {
			return nil, err
		}
		go rules.Watch(ctx, x.Rules, x.RulesPoll, log)
		go reloadOnHUP(ctx, rules, x.Rules, log)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	cfg := sched.Config{Limit: x.Limit}
	if x.Adaptive {
		cfg.Adaptive = &sched.AdaptiveConfig{}
	}
	o := phi.Options{Rules: rules, Scheduler: sched.New(cfg), Logger: log, Metrics: phi.NewMetrics(reg), Service: service}
	if service != "" {
		o.Identity = wire.SiteServiceID(x.TrustDomain, namespace, service, x.Site)
	}
	var auditLog *audit.Log
	if x.AuditLog != "" {
		key, err := auditKey(x.AuditKeyFile, log)
		if err != nil {
			return nil, err
		}
		d, err := audit.ParseDurability(x.AuditDurability)
		if err != nil {
			return nil, err
		}
		auditLog, err = audit.Open(audit.Options{Options: auditlog.Options{Path: x.AuditLog, Durability: d, MaxBytes: x.AuditMaxBytes, Logger: log}, Key: key, Observer: nodeID})
		if err != nil {
			return nil, err
		}
		o.Audit = auditLog
		registerAuditMetrics(reg, auditLog)
	} else {
		log.Warn("no --audit-log: PHI requests are tagged and queued but NOT audited; never run a PHI service like this in production")
	}
	// A start that fails from here on must not leave the trail open: a
	// caller other than the command may carry on.
	closeAudit := func() {
		if auditLog != nil {
			auditLog.Close()
		}
	}
	lis, err := extproc.Listen(x.Listen)
	if err != nil {
		closeAudit()
		return nil, err
	}
	srv := extproc.New(phi.New(o), log)
	g, _ := extproc.NewGRPCServer(srv)
	var ready atomic.Bool
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready.Load() {
			http.Error(w, "ext_proc server not serving", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	hlis, err := net.Listen("tcp", x.HealthListen)
	if err != nil {
		lis.Close()
		closeAudit()
		return nil, fmt.Errorf("--health-listen %q: %w", x.HealthListen, err)
	}
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go hs.Serve(hlis)
	log.Info("PHI ext_proc extension serving", "extproc", lis.Addr().String(), "health", hlis.Addr().String(),
		"rules", x.Rules, "audit", x.AuditLog != "")
	errc := make(chan error, 1)
	go func() {
		ready.Store(true)
		// Envoy holds one ext_proc stream per in-flight request: give
		// them the longest queue wait to finish before a hard stop.
		err := extproc.Serve(ctx, g, lis, sched.LongestWait(cfg))
		ready.Store(false)
		// The servers close their listeners from goroutines that may not
		// have started yet; closing them here frees both addresses before
		// the caller hears that the extension has stopped.
		lis.Close()
		hs.Close()
		hlis.Close()
		if auditLog != nil {
			err = errors.Join(err, auditLog.Close())
		}
		errc <- err
	}()
	return errc, nil
}

// registerAuditMetrics exports the trail's own counters. A record that
// is not written is never dropped silently: it is counted here and
// logged (without its content) by the trail.
func registerAuditMetrics(reg prometheus.Registerer, l *audit.Log) {
	reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "medmesh_audit_write_failures_total",
			Help: "Audit records that could not be written to the trail (encode, write, rotation or fsync errors, or refused after shutdown began).",
		}, func() float64 { return float64(l.Failures()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "medmesh_audit_queue_full_total",
			Help: "Times a finished PHI request waited for room in the batched audit queue (the disk not keeping up); its answer was held, its record kept.",
		}, func() float64 { return float64(l.QueueFullWaits()) }),
	)
}

func reloadOnHUP(ctx context.Context, rules *phi.Rules, path string, log *slog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			if err := rules.Load(path); err != nil {
				log.Error("rules not reloaded; previous rules stay in force", "err", err)
				continue
			}
			log.Info("rules reloaded", "file", path)
		}
	}
}

// auditKey reads the HMAC key, or makes a random one (hashes then link a
// patient's records only within one run, and the operator is told).
func auditKey(path string, log *slog.Logger) ([]byte, error) {
	if path == "" {
		log.Warn("no --audit-key-file: using a random key; audit hashes of one patient will not match across restarts")
		k := make([]byte, 32)
		_, err := rand.Read(k)
		return k, err
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("--audit-key-file: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("--audit-key-file %s: mode %v lets others read the key; chmod 600", path, st.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--audit-key-file: %w", err)
	}
	b = []byte(strings.TrimSpace(string(b)))
	if len(b) < 16 {
		return nil, fmt.Errorf("--audit-key-file %s: key has %d bytes, want at least 16", path, len(b))
	}
	return b, nil
}
