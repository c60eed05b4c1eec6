package main

import (
	"flag"
	"fmt"
	"io"
	"os"

	"medmesh/controlplane/bootstrap"
)

func runBootstrap(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bootstrap", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o bootstrap.Options
	fs.StringVar(&o.XDSAddress, "xds-address", "127.0.0.1:15010", "control plane xDS address host:port")
	fs.StringVar(&o.NodeID, "node-id", "", "node id: the Consul service ID of the instance")
	fs.StringVar(&o.Service, "service", "", "service name (node.cluster)")
	proxyless := fs.Bool("proxyless", false, "print a gRPC xDS bootstrap (JSON) for GRPC_XDS_BOOTSTRAP")
	fs.StringVar(&o.SVIDDir, "svid-dir", "", "proxyless: directory holding svid.pem, svid_key.pem and bundle.pem")
	sotw := fs.Bool("sotw", false, "Envoy: use state-of-the-world xDS instead of delta")
	fs.IntVar(&o.AdminPort, "admin-port", 15901, "Envoy: admin port on loopback")
	fs.StringVar(&o.JoinToken, "join-token", "", "Envoy: one-time join token proving the proxy's identity")
	fs.StringVar(&o.ConsulToken, "consul-token", "", "Envoy: Consul ACL token allowed to write the service, proving the proxy's identity")
	output := fs.String("output", "", "write the bootstrap to this file (mode 0600: it may hold a token) instead of stdout")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	o.Delta = !*sotw
	var out []byte
	var err error
	if *proxyless {
		out, err = bootstrap.Proxyless(o)
	} else {
		out, err = bootstrap.Envoy(o)
	}
	if err != nil {
		fmt.Fprintln(stderr, "medmesh bootstrap:", err)
		return 2
	}
	if len(out) > 0 && out[len(out)-1] != '\n' {
		out = append(out, '\n')
	}
	if *output != "" {
		// The injector's init container writes the pod's Envoy bootstrap
		// into a volume Envoy reads; no shell redirection needed.
		if err := os.WriteFile(*output, out, 0o600); err != nil {
			fmt.Fprintln(stderr, "medmesh bootstrap: --output:", err)
			return 1
		}
		return 0
	}
	stdout.Write(out)
	return 0
}
