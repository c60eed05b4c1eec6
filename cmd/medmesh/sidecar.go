package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"medmesh/api/wire"
	"medmesh/sidecar/svid"
)

// runSidecar runs the workload-side companion: the PHI ext_proc extension
// (unless --extproc-listen=""), plus the SVID agent with --svid-dir and
// the SPIFFE Workload API with --workload-api.
func runSidecar(args []string, _, stderr io.Writer) int {
	fs := flag.NewFlagSet("sidecar", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o svid.Options
	fs.StringVar(&o.Dir, "svid-dir", "", "keep the workload's SVID and bundle fresh in this directory (svid.pem, svid_key.pem, bundle.pem)")
	fs.StringVar(&o.XDSAddress, "xds-address", wire.DefaultXDSAddress, "control plane xDS address")
	fs.StringVar(&o.NodeID, "node-id", "", "node id (e.g. the Consul service ID of the instance, with a suffix)")
	fs.StringVar(&o.Service, "service", "", "the workload's service name")
	fs.StringVar(&o.JoinToken, "join-token", os.Getenv("MEDMESH_JOIN_TOKEN"), "one-time join token proving the workload's identity (default $MEDMESH_JOIN_TOKEN)")
	fs.StringVar(&o.K8sTokenFile, "k8s-token-file", "", "projected Kubernetes service-account token (audience medmesh) proving the workload's identity; read on every connection")
	fs.StringVar(&o.ConsulToken, "consul-token", os.Getenv("MEDMESH_CONSUL_TOKEN"), "Consul ACL token allowed to write the service, proving the workload's identity (default $MEDMESH_CONSUL_TOKEN)")
	workloadAPI := fs.String("workload-api", "", "serve the SPIFFE Workload API on this unix socket (unix:///path)")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	var xp extprocFlags
	xp.register(fs)
	var reg registerFlags
	reg.register(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if o.Dir == "" && *workloadAPI == "" && xp.listen == "" {
		fmt.Fprintln(stderr, "medmesh sidecar: nothing to run: --extproc-listen is empty and neither --svid-dir nor --workload-api is set")
		return 2
	}
	o.Logger = newLogger(stderr, *logFormat, "info")
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	waitDeregistered, err := reg.start(ctx, o.Service, xp.namespace, o.ConsulToken, o.Logger)
	if err != nil {
		fmt.Fprintln(stderr, "medmesh sidecar:", err)
		return 2
	}
	// Whatever ends the sidecar, the instance leaves Consul before it exits.
	defer func() { stop(); waitDeregistered() }()
	var extprocDone <-chan error
	if xp.listen != "" {
		var err error
		if extprocDone, err = startExtProc(ctx, &xp, o.Service, o.NodeID, o.Logger); err != nil {
			fmt.Fprintln(stderr, "medmesh sidecar:", err)
			return 2
		}
	}
	if o.Dir == "" && *workloadAPI == "" {
		if err := <-extprocDone; err != nil {
			fmt.Fprintln(stderr, "medmesh sidecar:", err)
			return 1
		}
		return 0
	}
	if *workloadAPI != "" {
		o.WorkloadAPI = svid.NewWorkloadAPI()
		go func() {
			if err := svid.ServeWorkloadAPI(ctx, *workloadAPI, o.WorkloadAPI); err != nil {
				o.Logger.Error("workload API stopped", "err", err)
				stop()
			}
		}()
	}
	if err := svid.Run(ctx, o); err != nil {
		fmt.Fprintln(stderr, "medmesh sidecar:", err)
		return 2
	}
	if extprocDone != nil {
		stop()
		if err := <-extprocDone; err != nil {
			fmt.Fprintln(stderr, "medmesh sidecar:", err)
			return 1
		}
	}
	return 0
}
