package integration

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"

	"github.com/hashicorp/consul/api"

	"medmesh/certs"
	"medmesh/controlplane"
	"medmesh/controlplane/bootstrap"
	"medmesh/examples/clinical"
)

// TestInteropMTLS: each implementation's client and server with its xDS
// credentials, against grpc-go's on the other side: mTLS with SPIFFE
// identities from the control plane and certificate files from
// `medmesh sidecar --svid-dir`, the PHI default deny, then an intention
// that lets the caller in. The server listens on 0.0.0.0.
func TestInteropMTLS(t *testing.T) {
	nodeEnv(t)
	ca, err := certs.New(certs.Options{TrustDomain: "medmesh.local", StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	consul := startConsul(t, true)
	c := consul.Client()
	cp := startControlPlane(t, consulSource(consul), func(o *controlplane.Options) { o.Identities = ca })
	ward, emr := svidDir(t, ca, "ward"), svidDir(t, ca, "emr")
	wardOpts := func(id string) bootstrap.Options {
		return bootstrap.Options{XDSAddress: cp.xdsAddr(), NodeID: id, Service: "ward", SVIDDir: ward}
	}
	emrMeta := map[string]string{"medmesh-kind": "emr", "medmesh-protocol": "grpc"}
	// The service is emr (its SPIFFE ID is in emr's SVID); each
	// implementation's server is one instance, reached through the
	// subset the route policy-free way: by calling until it answers.
	for _, impl := range implementations {
		t.Run(impl.name, func(t *testing.T) {
			// impl's server, called by grpc-go.
			id := impl.name + "-emr"
			port := freePort(t)
			impl.server(t, bootstrap.Options{XDSAddress: cp.xdsAddr(), NodeID: id, Service: "emr", SVIDDir: emr},
				net.JoinHostPort("0.0.0.0", strconv.Itoa(port)))
			register(t, c, "emr", id, port, emrMeta, api.HealthPassing)
			caller := goClient(t, wardOpts("go-ward-"+impl.name), "emr")
			eventually(t, impl.name+" server: ward refused by emr's default deny", func() error {
				_, errs, _ := caller.calls(1, nil)
				for msg := range errs {
					if strings.HasPrefix(msg, "PermissionDenied") || strings.HasPrefix(msg, "PERMISSION_DENIED") {
						return nil
					}
				}
				return fmt.Errorf("want PermissionDenied, got %v; %s", errs, proxyProblems(t, cp))
			})
			setIntention(t, c, "emr", "ward", api.IntentionActionAllow)
			eventually(t, impl.name+" server: an mTLS call succeeds once allowed", func() error {
				served, errs, _ := caller.calls(4, nil)
				if served[id] == 0 {
					return fmt.Errorf("served by %s, errors %v; %s", keys(served), errs, proxyProblems(t, cp))
				}
				return nil
			})
			noNACKs(t, cp, impl.name+" server")

			// impl's client, calling a grpc-go server.
			goID := "go-emr-for-" + impl.name
			goPort := freePort(t)
			serveXDS(t, bootstrap.Options{XDSAddress: cp.xdsAddr(), NodeID: goID, Service: "emr", SVIDDir: emr}, goPort, true,
				&clinical.Server{Instance: goID})
			register(t, c, "emr", goID, goPort, emrMeta, api.HealthPassing)
			client := impl.client(t, wardOpts(impl.name+"-ward"), "emr")
			eventually(t, impl.name+" client: mTLS calls reach grpc-go", func() error {
				served, errs, err := client.calls(6, nil)
				if err != nil {
					t.Fatal(err)
				}
				if served[goID] == 0 {
					return fmt.Errorf("served by %s, errors %v", keys(served), errs)
				}
				return nil
			})
			noNACKs(t, cp, impl.name+" client")
			setIntention(t, c, "emr", "ward", api.IntentionActionDeny)
		})
	}
}

// TestGRPCJSServerWithoutRBACFailsClosed: a grpc-js server started
// without GRPC_XDS_EXPERIMENTAL_RBAC does not implement the RBAC filter
// medmesh puts on every mTLS listener. The filter is not optional, so it
// rejects the listener (a NACK naming the filter, shown in status) and
// never serves: a PHI service is never exposed without its authorization.
func TestGRPCJSServerWithoutRBACFailsClosed(t *testing.T) {
	nodeEnv(t)
	ca, err := certs.New(certs.Options{TrustDomain: "medmesh.local", StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	consul := startConsul(t, true)
	cp := startControlPlane(t, consulSource(consul), func(o *controlplane.Options) { o.Identities = ca })
	port := freePort(t)
	addr := net.JoinHostPort("0.0.0.0", strconv.Itoa(port))
	o := bootstrap.Options{XDSAddress: cp.xdsAddr(), NodeID: "js-emr-1", Service: "emr", SVIDDir: svidDir(t, ca, "emr")}
	startNode(t, o.NodeID, "server.js", o, nil, addr, o.NodeID, "xds")
	register(t, consul.Client(), "emr", o.NodeID, port, map[string]string{"medmesh-kind": "emr", "medmesh-protocol": "grpc"}, api.HealthPassing)
	eventually(t, "the listener is NACKed naming the RBAC filter", func() error {
		for _, p := range proxies(t, cp).Proxies {
			if p.ID == o.NodeID && p.LastNACK != nil && strings.Contains(p.LastNACK.Message, "rbac") {
				return nil
			}
		}
		return fmt.Errorf("no NACK yet: %s", proxyProblems(t, cp))
	})
	if c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port))); err == nil {
		c.Close()
		t.Fatalf("the grpc-js server accepts connections on %s without its authorization filter", addr)
	}
}
