// Command clinical-service runs one instance of an example clinical service
// (EMR, HIS, imaging or the drug formulary) as a proxyless gRPC workload
// of the medmesh mesh:
//
//   - it serves examples/clinical through xds.NewGRPCServer, so the server
//     only accepts calls once the control plane has sent its inbound
//     listener;
//   - it registers itself in Consul (service meta tells medmesh the kind,
//     protocol and load-balancing policy) with a TTL check it keeps
//     passing, and deregisters on exit;
//   - as a client it dials xds:///<service> for every --calls target and
//     calls Fetch every --interval, logging a one-line summary per target
//     every --report (calls ok/failed, which instances answered);
//   - both sides use xDS credentials: with the control plane's mTLS on,
//     calls are mutual TLS with the SVID `medmesh sidecar --svid-dir`
//     keeps fresh (--svid-dir), and the server logs every --report the
//     SPIFFE IDs of the callers it answered.
//
// Requests carry synthetic record kinds ("Patient", "ImagingStudy", ...)
// only; no example ever handles patient data.
//
// Signals: SIGTERM/SIGINT stop it gracefully (deregister, drain, stop);
// SIGUSR1 makes it report its health check critical, SIGUSR2 passing again,
// which is how the demo shows the mesh routing around a failing instance.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"medmesh/api/wire"
	"medmesh/controlplane/bootstrap"
	"medmesh/examples/meshapp"
	"medmesh/internal/consulagent"
	"medmesh/registry"
)

// kindMeta is what each example service tells medmesh about itself in
// Consul service meta. Imaging uses least_request because study fetches
// vary in cost; the others use the default round robin, so the demo shows
// two policies side by side. The formulary (which drugs the hospital
// stocks) is a generic service: not PHI, so its calls may cross sites.
var kindMeta = map[string]struct{ kind, lb string }{
	"emr":       {"emr", "round_robin"},
	"his":       {"his", "round_robin"},
	"imaging":   {"imaging", "least_request"},
	"formulary": {"generic", "round_robin"},
}

// recordKinds are the synthetic record kinds a caller asks each service
// for. They name a kind of record, never a record.
var recordKinds = map[string][]string{
	"emr":       {"Patient", "Encounter", "Observation", "MedicationRequest", "AllergyIntolerance"},
	"his":       {"Appointment", "Admission", "BedAssignment"},
	"imaging":   {"ImagingStudy", "DiagnosticReport", "ServiceRequest"},
	"formulary": {"Medication", "MedicationKnowledge"},
}

type options struct {
	service    string
	id         string
	port       int
	consul     string
	xdsAddress string
	calls      []string
	interval   time.Duration
	report     time.Duration
	ttl        time.Duration
	drain      time.Duration
	lb         string
	logFormat  string
	svidDir    string
	probe      bool
	probeWait  time.Duration
}

func parseFlags(args []string) (*options, error) {
	fs := flag.NewFlagSet("clinical-service", flag.ContinueOnError)
	o := &options{}
	defConsul := os.Getenv("CONSUL_HTTP_ADDR")
	if defConsul == "" {
		defConsul = "http://127.0.0.1:8500"
	}
	var calls string
	fs.StringVar(&o.service, "service", "", "service to run: emr, his, imaging or formulary")
	fs.StringVar(&o.id, "id", "", "instance ID: the Consul service ID and the xDS node ID (default <service>-<port>)")
	fs.IntVar(&o.port, "port", 0, "port to serve on, on 127.0.0.1 (0: a free port)")
	fs.StringVar(&o.consul, "consul", defConsul, "Consul HTTP address (default from CONSUL_HTTP_ADDR)")
	fs.StringVar(&o.xdsAddress, "xds-address", wire.DefaultXDSAddress, "medmesh control plane xDS address")
	fs.StringVar(&calls, "calls", "", "comma-separated services to call, e.g. emr,imaging")
	fs.DurationVar(&o.interval, "interval", 500*time.Millisecond, "time between two calls to one target")
	fs.DurationVar(&o.report, "report", 5*time.Second, "how often to log the per-target call summary")
	fs.DurationVar(&o.ttl, "ttl", 6*time.Second, "TTL of the Consul health check (refreshed every third of it)")
	fs.DurationVar(&o.drain, "drain", time.Second, "on stop, how long to keep serving after deregistering so callers move away")
	fs.StringVar(&o.lb, "lb", "", "medmesh-lb meta (default per service: imaging least_request, others round_robin)")
	fs.StringVar(&o.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&o.svidDir, "svid-dir", "", "where `medmesh sidecar --svid-dir` keeps this workload's SVID and bundle (named in the xDS bootstrap it writes; needed when the control plane runs mTLS)")
	fs.DurationVar(&o.probeWait, "probe-wait", warmUp, "with --probe: how long to retry a call the mesh answers Unavailable (resources or certificates still arriving) before that is the outcome")
	fs.BoolVar(&o.probe, "probe", false, "call each --calls target once, log the outcome (message \"probe\") and exit; neither serve nor register, and --service may be any name")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q (everything is a flag)", fs.Args())
	}
	for _, c := range strings.Split(calls, ",") {
		if c = strings.TrimSpace(c); c != "" {
			o.calls = append(o.calls, c)
		}
	}
	km, ok := kindMeta[o.service]
	switch {
	case o.probe && (o.service == "" || len(o.calls) == 0):
		return nil, errors.New("--probe needs --service (the caller's identity) and --calls")
	case !ok && !o.probe:
		return nil, fmt.Errorf("--service must be emr, his, imaging or formulary, not %q", o.service)
	}
	if o.lb == "" {
		o.lb = km.lb
	}
	if o.interval <= 0 || o.report <= 0 || o.ttl < time.Second || o.probeWait <= 0 {
		return nil, errors.New("--interval, --report and --probe-wait must be positive and --ttl at least 1s")
	}
	return o, nil
}

func main() {
	o, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "clinical-service:", err)
		os.Exit(2)
	}
	if o.port == 0 {
		if o.port, err = consulagent.FreePort(); err != nil {
			fmt.Fprintln(os.Stderr, "clinical-service:", err)
			os.Exit(1)
		}
	}
	if o.id == "" {
		o.id = o.service + "-" + strconv.Itoa(o.port)
	}
	// May not return: see meshapp.EnsureBootstrap for why it re-executes.
	bootstrapPath, owned, err := meshapp.EnsureBootstrap(
		bootstrap.Options{XDSAddress: o.xdsAddress, NodeID: o.id, Service: o.service, SVIDDir: o.svidDir},
		// Pin the port and ID the bootstrap was written for.
		"--port="+strconv.Itoa(o.port), "--id="+o.id)
	if err != nil {
		fmt.Fprintln(os.Stderr, "clinical-service:", err)
		os.Exit(1)
	}
	if owned {
		defer os.Remove(bootstrapPath)
	}
	log := newLogger(o.logFormat).With("instance", o.id)
	log.Info("starting", "service", o.service, "port", o.port, "xds", o.xdsAddress, "consul", o.consul,
		"bootstrap", bootstrapPath, "calls", strings.Join(o.calls, ","))

	// Logs go to a pipe when a supervisor (the demo) reads them; if it
	// dies, a log write must not kill the service with SIGPIPE before it
	// has deregistered and removed its bootstrap file.
	signal.Ignore(syscall.SIGPIPE)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	flushTraces, err := meshapp.StartTracing(o.service, o.id, log)
	if err != nil {
		log.Error("tracing", "err", err)
		if owned {
			os.Remove(bootstrapPath)
		}
		os.Exit(2)
	}
	runner := run
	if o.probe {
		runner = probe
	}
	err = runner(ctx, o, log)
	flushTraces() // before any os.Exit below: deferred calls would not run
	if err != nil {
		log.Error("stopped with an error", "err", err)
		if owned {
			os.Remove(bootstrapPath) // deferred calls do not run after os.Exit
		}
		os.Exit(1)
	}
	log.Info("stopped")
}

func newLogger(format string) *slog.Logger {
	if format == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, nil))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, nil))
}

// run serves, registers and calls until ctx ends, then shuts down in the
// order that loses no calls: leave the registry first, keep serving while
// the mesh pushes the new endpoints, then stop.
func run(ctx context.Context, o *options, log *slog.Logger) error {
	lis, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(o.port)))
	if err != nil {
		return err
	}
	seen := &callers{}
	srv, serving, err := startServer(lis, o, log, seen)
	if err != nil {
		lis.Close()
		return err
	}
	defer meshapp.StopServer(srv, log)
	go seen.logEvery(ctx, o.report, log)

	km := kindMeta[o.service]
	reg, err := meshapp.NewRegistration(meshapp.Instance{
		Consul: o.consul, ID: o.id, Service: o.service, Port: o.port, TTL: o.ttl,
		Meta: map[string]string{registry.MetaKind: km.kind, registry.MetaProtocol: "grpc", registry.MetaLB: o.lb},
	}, log)
	if err != nil {
		return err
	}
	// Registered critical first: the instance is in the catalog, so the
	// control plane sends this server its inbound listener, but no caller
	// is routed here until the server actually serves.
	if err := reg.Register(ctx); err != nil {
		return err
	}
	defer reg.Deregister()

	select {
	case <-serving:
	case <-ctx.Done():
		return nil
	case <-time.After(60 * time.Second):
		return fmt.Errorf("no inbound listener from the control plane at %s after 60s (is it running, and does it see this instance in Consul?)", o.xdsAddress)
	}
	hb := reg.StartHeartbeat(ctx)

	callCtx, stopCalls := context.WithCancel(ctx)
	callersDone := startCallers(callCtx, o, log)

	health := make(chan os.Signal, 1)
	signal.Notify(health, syscall.SIGUSR1, syscall.SIGUSR2)
	defer signal.Stop(health)
wait:
	for {
		select {
		case s := <-health:
			if s == syscall.SIGUSR1 {
				reg.SetHealthy(false, "simulated failure (SIGUSR1)")
			} else {
				reg.SetHealthy(true, "recovered (SIGUSR2)")
			}
		case <-ctx.Done():
			break wait
		}
	}

	log.Info("stopping: leaving Consul, then draining", "drain", o.drain.String())
	hb.Stop()
	reg.Deregister()
	// Keep serving while the control plane removes this instance from
	// every caller's endpoints; stopping first would fail their calls.
	time.Sleep(o.drain)
	stopCalls()
	<-callersDone
	return nil
}
