package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"medmesh/api/wire"
	"medmesh/internal/telemetry"
	sidecarrun "medmesh/sidecar/run" // "run" is this command's own entry point
	"medmesh/sidecar/sched"
)

// sidecarFlags are `medmesh sidecar`'s flags: the process's options
// (sidecar/run), the log format, and the Consul registration's flags,
// which need a client built before they become options.
type sidecarFlags struct {
	o           sidecarrun.Options
	logFormat   string
	registerCfg registerFlags
}

func (f *sidecarFlags) register(fs *flag.FlagSet) {
	// The SVID agent and the Workload API.
	s := &f.o.SVID
	fs.StringVar(&s.Dir, "svid-dir", "", "keep the workload's SVID and bundle fresh in this directory (svid.pem, svid_key.pem, bundle.pem)")
	fs.StringVar(&s.XDSAddress, "xds-address", wire.DefaultXDSAddress, "control plane xDS address")
	fs.StringVar(&s.NodeID, "node-id", "", "node id (e.g. the Consul service ID of the instance, with a suffix)")
	fs.StringVar(&s.Service, "service", "", "the workload's service name")
	fs.StringVar(&s.JoinToken, "join-token", os.Getenv("MEDMESH_JOIN_TOKEN"), "one-time join token proving the workload's identity (default $MEDMESH_JOIN_TOKEN)")
	fs.StringVar(&s.K8sTokenFile, "k8s-token-file", "", "projected Kubernetes service-account token (audience medmesh) proving the workload's identity; read on every connection")
	fs.StringVar(&s.ConsulToken, "consul-token", os.Getenv("MEDMESH_CONSUL_TOKEN"), "Consul ACL token allowed to write the service, proving the workload's identity (default $MEDMESH_CONSUL_TOKEN)")
	fs.StringVar(&f.o.WorkloadAPI, "workload-api", "", "serve the SPIFFE Workload API on this unix socket (unix:///path)")
	fs.StringVar(&f.logFormat, "log-format", "text", "log format: text or json")

	// The PHI extension.
	x := &f.o.ExtProc
	fs.StringVar(&x.Listen, "extproc-listen", wire.DefaultExtProcAddress, `ext_proc gRPC address (host:port or unix:///path); "" turns the extension off`)
	fs.StringVar(&x.HealthListen, "health-listen", wire.DefaultSidecarHealth, "HTTP /healthz, /readyz and /metrics of the extension")
	fs.StringVar(&x.Rules, "rules", "", "operator classification rules and caller priority policy (YAML); reloaded on change and on SIGHUP")
	fs.DurationVar(&x.RulesPoll, "rules-poll", 2*time.Second, "how often --rules is checked for changes")
	fs.StringVar(&x.AuditLog, "audit-log", "", "HIPAA audit trail (FHIR AuditEvent JSON lines), one record per PHI request")
	fs.StringVar(&x.AuditKeyFile, "audit-key-file", "", "HMAC key for patient references in the audit trail (>= 16 bytes, not readable by others)")
	fs.StringVar(&x.AuditDurability, "audit-durability", "sync", "sync (write and fsync every record before answering) or batch (queue records; a writer writes them every 10ms and fsyncs every second; a full queue holds answers, never drops records)")
	fs.Int64Var(&x.AuditMaxBytes, "audit-max-bytes", 100<<20, "rotate the audit trail at this size")
	fs.IntVar(&x.Limit, "limit", sched.DefaultLimit, "concurrent requests admitted to the service")
	fs.BoolVar(&x.Adaptive, "adaptive", false, "adapt the concurrency limit to the service's latency (gradient), starting at --limit")
	fs.StringVar(&x.TrustDomain, "trust-domain", "medmesh.local", "SPIFFE trust domain (the service's identity in audit records)")
	fs.StringVar(&f.o.Namespace, "namespace", "default", "the service's namespace")
	fs.StringVar(&x.Site, "site", "", "the edge site the service runs at (its control plane's --site): part of its SPIFFE ID in audit records")

	f.registerCfg.register(fs)
}

func parseSidecarFlags(args []string, stderr io.Writer) (*sidecarFlags, error) {
	fs := flag.NewFlagSet("sidecar", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var f sidecarFlags
	f.register(fs)
	return &f, fs.Parse(args)
}

// runSidecar runs the workload-side companion: the PHI ext_proc extension
// (unless --extproc-listen=""), plus the SVID agent with --svid-dir and
// the SPIFFE Workload API with --workload-api. Bad options exit 2; an
// extension that fails while running exits 1.
func runSidecar(args []string, _, stderr io.Writer) int {
	f, err := parseSidecarFlags(args, stderr)
	if err != nil {
		return 2
	}
	o := f.o
	// Before the Consul client is built: a command that runs nothing
	// says so whatever else is wrong with it.
	if err := o.Validate(); err != nil {
		fmt.Fprintln(stderr, "medmesh sidecar:", err)
		return 2
	}
	o.Logger = newLogger(stderr, f.logFormat, "info")
	if o.Register, err = f.registerCfg.options(o.SVID.ConsulToken); err != nil {
		fmt.Fprintln(stderr, "medmesh sidecar:", err)
		return 2
	}
	// The PHI engine's admission spans go to the global provider; they
	// carry classes, priorities and outcomes, never request content.
	flushTraces, err := startTracing(o.Logger, telemetry.Options{Service: "medmesh-sidecar", Instance: o.SVID.NodeID})
	if err != nil {
		fmt.Fprintln(stderr, "medmesh sidecar: tracing:", err)
		return 2
	}
	defer flushTraces()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	done, err := sidecarrun.Start(ctx, o)
	if err != nil {
		fmt.Fprintln(stderr, "medmesh sidecar:", err)
		return 2
	}
	// Start's channel yields only once the instance has left Consul.
	if err := <-done; err != nil {
		fmt.Fprintln(stderr, "medmesh sidecar:", err)
		return 1
	}
	return 0
}
