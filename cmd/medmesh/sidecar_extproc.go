package main

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
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
	"medmesh/sidecar/audit"
	"medmesh/sidecar/extproc"
	"medmesh/sidecar/phi"
	"medmesh/sidecar/sched"
)

// extprocFlags are the `medmesh sidecar` flags of the PHI extension.
type extprocFlags struct {
	listen, healthListen            string
	rules                           string
	rulesPoll                       time.Duration
	auditLog, auditKeyFile, durable string
	auditMaxBytes                   int64
	limit                           int
	adaptive                        bool
	trustDomain, namespace          string
}

func (f *extprocFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.listen, "extproc-listen", wire.DefaultExtProcAddress, `ext_proc gRPC address (host:port or unix:///path); "" turns the extension off`)
	fs.StringVar(&f.healthListen, "health-listen", wire.DefaultSidecarHealth, "HTTP /healthz, /readyz and /metrics of the extension")
	fs.StringVar(&f.rules, "rules", "", "operator classification rules and caller priority policy (YAML); reloaded on change and on SIGHUP")
	fs.DurationVar(&f.rulesPoll, "rules-poll", 2*time.Second, "how often --rules is checked for changes")
	fs.StringVar(&f.auditLog, "audit-log", "", "HIPAA audit trail (FHIR AuditEvent JSON lines), one record per PHI request")
	fs.StringVar(&f.auditKeyFile, "audit-key-file", "", "HMAC key for patient references in the audit trail (>= 16 bytes, not readable by others)")
	fs.StringVar(&f.durable, "audit-durability", "sync", "sync (fsync every record) or batch (fsync every second)")
	fs.Int64Var(&f.auditMaxBytes, "audit-max-bytes", 100<<20, "rotate the audit trail at this size")
	fs.IntVar(&f.limit, "limit", sched.DefaultLimit, "concurrent requests admitted to the service")
	fs.BoolVar(&f.adaptive, "adaptive", false, "adapt the concurrency limit to the service's latency (gradient), starting at --limit")
	fs.StringVar(&f.trustDomain, "trust-domain", "medmesh.local", "SPIFFE trust domain (the service's identity in audit records)")
	fs.StringVar(&f.namespace, "namespace", "default", "the service's namespace")
}

// startExtProc starts the extension and returns a channel that yields
// its terminal error (nil after ctx ends).
func startExtProc(ctx context.Context, f *extprocFlags, service, nodeID string, log *slog.Logger) (<-chan error, error) {
	if os.Getenv("GOGC") == "" {
		// Every request waits on this process; its heap is small (tens of
		// MiB), so fewer GC cycles are worth the memory: the benchmark's
		// p99 overhead fell from ~3 ms to ~1.8 ms at GOGC=400.
		debug.SetGCPercent(400)
	}
	rules := phi.NewRules()
	if f.rules != "" {
		if err := rules.Load(f.rules); err != nil {
			return nil, err
		}
		go rules.Watch(ctx, f.rules, f.rulesPoll, log)
		go reloadOnHUP(ctx, rules, f.rules, log)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	cfg := sched.Config{Limit: f.limit}
	if f.adaptive {
		cfg.Adaptive = &sched.AdaptiveConfig{}
	}
	o := phi.Options{Rules: rules, Scheduler: sched.New(cfg), Logger: log, Metrics: phi.NewMetrics(reg), Service: service}
	if service != "" {
		o.Identity = wire.ServiceID(f.trustDomain, f.namespace, service)
	}
	var auditLog *audit.Log
	if f.auditLog != "" {
		key, err := auditKey(f.auditKeyFile, log)
		if err != nil {
			return nil, err
		}
		d, err := audit.ParseDurability(f.durable)
		if err != nil {
			return nil, err
		}
		auditLog, err = audit.Open(audit.Options{Path: f.auditLog, Key: key, Durability: d, MaxBytes: f.auditMaxBytes, Observer: nodeID})
		if err != nil {
			return nil, err
		}
		o.Audit = auditLog
	} else {
		log.Warn("no --audit-log: PHI requests are tagged and queued but NOT audited; never run a PHI service like this in production")
	}
	lis, err := extproc.Listen(f.listen)
	if err != nil {
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
	hlis, err := net.Listen("tcp", f.healthListen)
	if err != nil {
		lis.Close()
		return nil, fmt.Errorf("--health-listen %q: %w", f.healthListen, err)
	}
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go hs.Serve(hlis)
	log.Info("PHI ext_proc extension serving", "extproc", lis.Addr().String(), "health", hlis.Addr().String(),
		"rules", f.rules, "audit", f.auditLog != "")
	errc := make(chan error, 1)
	go func() {
		ready.Store(true)
		// Envoy holds one ext_proc stream per in-flight request: give
		// them the longest queue wait to finish before a hard stop.
		err := extproc.Serve(ctx, g, lis, sched.LongestWait(cfg))
		ready.Store(false)
		hs.Close()
		if auditLog != nil {
			err = errors.Join(err, auditLog.Close())
		}
		errc <- err
	}()
	return errc, nil
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
