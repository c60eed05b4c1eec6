package integration

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/hashicorp/consul/api"

	"medmesh/api/wire"
	"medmesh/certs"
	"medmesh/controlplane"
	"medmesh/controlplane/bootstrap"
	"medmesh/examples/clinical"
)

// TestProxylessServerOnWildcardAddress: grpc-go xDS servers listening on
// 0.0.0.0 and [::] (the default of most servers) get the inbound listener
// of the instance registered on their port and serve, with mTLS off and
// on; a server listening on a port no instance is registered on is named
// in /debug/proxies with the address it asked for.
func TestProxylessServerOnWildcardAddress(t *testing.T) {
	for _, mtls := range []bool{false, true} {
		t.Run(fmt.Sprintf("mtls=%t", mtls), func(t *testing.T) { testWildcardServers(t, mtls) })
	}
}

func testWildcardServers(t *testing.T, mtls bool) {
	var ca *certs.CA
	var opts []cpOption
	if mtls {
		var err error
		if ca, err = certs.New(certs.Options{TrustDomain: "medmesh.local", StateDir: t.TempDir()}); err != nil {
			t.Fatal(err)
		}
		opts = append(opts, func(o *controlplane.Options) { o.Identities = ca })
	}
	consul := startConsul(t, true)
	cp := startControlPlane(t, consulSource(consul), opts...)
	options := func(id, svc string) bootstrap.Options {
		o := bootstrap.Options{XDSAddress: cp.xdsAddr(), NodeID: id, Service: svc}
		if mtls {
			o.SVIDDir = svidDir(t, ca, svc)
		}
		return o
	}
	// Not PHI, so any workload of the trust domain may call it with mTLS.
	meta := map[string]string{"medmesh-kind": "generic", "medmesh-protocol": "grpc"}
	listens := map[string]struct{ network, host string }{
		"lab-1": {"tcp4", "0.0.0.0"}, // Go's "tcp" would report [::]
		"lab-2": {"tcp", "::"},
	}
	asked := map[string]string{}
	for id, l := range listens {
		lis, err := net.Listen(l.network, net.JoinHostPort(l.host, "0"))
		if err != nil {
			t.Fatalf("listen on %s: %v", l.host, err)
		}
		port := lis.Addr().(*net.TCPAddr).Port
		asked[id] = wire.ProxylessServerListenerName(l.host, port)
		serveXDSOn(t, options(id, "lab"), lis, mtls, &clinical.Server{Instance: id})
		// Registered at the loopback address callers dial; the server
		// listens on every address.
		register(t, consul.Client(), "lab", id, port, meta, api.HealthPassing)
	}
	cc := dialXDSWith(t, options("ward-1", "ward"), "lab", mtls)
	eventually(t, "both wildcard servers serve", func() error {
		seen, err := servedBy(context.Background(), cc, 10)
		if err != nil {
			return fmt.Errorf("%w; proxies: %s", err, proxyProblems(t, cp))
		}
		if seen["lab-1"] == 0 || seen["lab-2"] == 0 {
			return fmt.Errorf("served by %s", keys(seen))
		}
		return nil
	})
	for _, p := range proxies(t, cp).Proxies {
		if want, ok := asked[p.ID]; ok && (len(p.ServerListeners) != 1 || p.ServerListeners[0] != want || len(p.Problems) > 0) {
			t.Errorf("%s asked for %q, want [%s]; problems %q", p.ID, p.ServerListeners, want, p.Problems)
		}
		if p.LastNACK != nil {
			t.Errorf("proxy %s NACKed: %s", p.ID, p.LastNACK.Message)
		}
	}

	// A server whose instance is registered on one port but which listens
	// on another: it cannot serve, and status says who and where.
	lis, err := net.Listen("tcp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	stray := lis.Addr().(*net.TCPAddr).Port
	registered := freePort(t)
	register(t, consul.Client(), "lab", "lab-3", registered, meta, api.HealthCritical)
	serveXDSOn(t, options("lab-3", "lab"), lis, mtls, &clinical.Server{Instance: "lab-3"})
	want := fmt.Sprintf(`node "lab-3" asked for server listener %q (it listens on 0.0.0.0:%d): no instance of service "lab" is registered on port %d (instance "lab-3" is registered at 127.0.0.1:%d)`,
		wire.ProxylessServerListenerName("0.0.0.0", stray), stray, stray, registered)
	eventually(t, "the stray port is reported", func() error {
		for _, p := range proxies(t, cp).Proxies {
			for _, problem := range p.Problems {
				if problem == want {
					return nil
				}
			}
		}
		return fmt.Errorf("want problem %q; have %s", want, proxyProblems(t, cp))
	})
}

// proxyProblems summarises /debug/proxies for a failure message.
func proxyProblems(t *testing.T, cp *cpHandle) string {
	t.Helper()
	var b strings.Builder
	for _, p := range proxies(t, cp).Proxies {
		fmt.Fprintf(&b, "[%s problems=%q", p.ID, p.Problems)
		if p.LastNACK != nil {
			fmt.Fprintf(&b, " nack=%q", p.LastNACK.Message)
		}
		b.WriteString("] ")
	}
	return b.String()
}
