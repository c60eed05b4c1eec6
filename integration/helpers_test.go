package integration

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	xdscreds "google.golang.org/grpc/credentials/xds"
	"google.golang.org/grpc/xds"

	"medmesh/certs"
	"medmesh/controlplane"
	"medmesh/controlplane/bootstrap"
	"medmesh/examples/clinical"
	"medmesh/internal/consulagent"
	"medmesh/internal/simproxy"
	"medmesh/internal/testutil"
	"medmesh/registry"
)

// failing marks instances (by ID) whose test server answers UNAVAILABLE.
var failing sync.Map

// testTimeout bounds every wait; conditions are polled or signalled, never
// slept on.
const testTimeout = 60 * time.Second

func startConsul(t *testing.T, dev bool) *consulagent.Agent { return testutil.Consul(t, dev) }

// syncBuffer is a concurrency-safe log sink that tests can search.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type cpHandle struct {
	cp     *controlplane.ControlPlane
	logs   *syncBuffer
	cancel context.CancelFunc
	done   chan error
}

func (h *cpHandle) stop(t *testing.T) {
	t.Helper()
	h.cancel()
	if err := <-h.done; err != nil {
		t.Errorf("control plane: %v", err)
	}
}

func (h *cpHandle) xdsAddr() string { return h.cp.XDSAddr().String() }

func (h *cpHandle) adminURL() string { return "http://" + h.cp.AdminAddr().String() }

type cpOption func(*controlplane.Options)

// sourceFunc makes a catalog source that logs to the control plane's log.
type sourceFunc func(*slog.Logger) registry.Source

func startControlPlane(t *testing.T, mk sourceFunc, opts ...cpOption) *cpHandle {
	t.Helper()
	logs := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	o := controlplane.Options{
		Logger:    log,
		Source:    mk(log),
		XDSListen: "127.0.0.1:0", AdminListen: "127.0.0.1:0",
		// The tests call the admin API from loopback without credentials,
		// as `medmesh controlplane --dev` allows; admin_auth_test.go checks
		// the credentialed paths.
		AdminAuth: controlplane.AdminAuth{DevLoopback: true},
	}
	for _, f := range opts {
		f(&o)
	}
	cp, err := controlplane.New(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h := &cpHandle{cp: cp, logs: logs, cancel: cancel, done: make(chan error, 1)}
	go func() { h.done <- cp.Run(ctx) }()
	cp.XDSAddr() // wait until listening
	t.Cleanup(func() {
		cancel()
		if t.Failed() {
			t.Logf("control plane logs:\n%s", logs.String())
		}
	})
	return h
}

func consulSource(a *consulagent.Agent) sourceFunc {
	return func(log *slog.Logger) registry.Source {
		return registry.NewConsul(registry.ConsulOptions{
			Client: a.Client(), Coalesce: 20 * time.Millisecond, Logger: log,
			BackoffMin: 50 * time.Millisecond, BackoffMax: 500 * time.Millisecond,
		})
	}
}

// register registers a service instance with a TTL check in the given state.
func register(t *testing.T, c *api.Client, svc, id string, port int, meta map[string]string, status string) {
	t.Helper()
	err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{
		ID: id, Name: svc, Address: "127.0.0.1", Port: port, Meta: meta,
		Check: &api.AgentServiceCheck{CheckID: checkID(id), TTL: "10m", Status: status},
	})
	if err != nil {
		t.Fatalf("register %s: %v", id, err)
	}
	// Report the status as a live workload does: Consul persists the state
	// of TTL checks that were updated, so it survives an agent restart.
	setHealth(t, c, id, status)
}

func checkID(id string) string { return "ttl-" + id }

func setHealth(t *testing.T, c *api.Client, id, status string) {
	t.Helper()
	if err := c.Agent().UpdateTTL(checkID(id), "set by test", status); err != nil {
		t.Fatalf("update check of %s: %v", id, err)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	p, err := consulagent.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// startXDSServer runs a plaintext proxyless xDS gRPC server for one
// instance, answering UNAVAILABLE while the instance is marked failing.
func startXDSServer(t *testing.T, xdsAddr, svc, id string, port int) *xds.GRPCServer {
	t.Helper()
	return serveXDS(t, bootstrap.Options{XDSAddress: xdsAddr, NodeID: id, Service: svc}, port, false,
		&clinical.Server{Instance: id, Handle: func(context.Context, string) error {
			if v, ok := failing.Load(id); ok && v.(bool) {
				return errUnavailable
			}
			return nil
		}})
}

// serveXDS runs a proxyless xDS gRPC server with the given bootstrap on
// 127.0.0.1:port; with mtls it uses xDS credentials (security from the
// control plane, certificates from the bootstrap's SVID directory).
func serveXDS(t *testing.T, o bootstrap.Options, port int, mtls bool, h *clinical.Server, opts ...grpc.ServerOption) *xds.GRPCServer {
	t.Helper()
	lis, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	return serveXDSOn(t, o, lis, mtls, h, opts...)
}

// serveXDSOn is serveXDS on a listener of the caller's (a wildcard
// address: the server then asks for the listener named after it).
func serveXDSOn(t *testing.T, o bootstrap.Options, lis net.Listener, mtls bool, h *clinical.Server, opts ...grpc.ServerOption) *xds.GRPCServer {
	t.Helper()
	bs, err := bootstrap.Proxyless(o)
	if err != nil {
		t.Fatal(err)
	}
	creds := insecure.NewCredentials()
	if mtls {
		if creds, err = xdscreds.NewServerCredentials(xdscreds.ServerOptions{FallbackCreds: insecure.NewCredentials()}); err != nil {
			t.Fatal(err)
		}
	}
	srv, err := xds.NewGRPCServer(append([]grpc.ServerOption{grpc.Creds(creds), xds.BootstrapContentsForTesting(bs)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	clinical.Register(srv, h)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return srv
}

// dialXDS returns a plaintext proxyless client for xds:///<service>.
func dialXDS(t *testing.T, xdsAddr, nodeID, target string) *grpc.ClientConn {
	t.Helper()
	return dialXDSWith(t, bootstrap.Options{XDSAddress: xdsAddr, NodeID: nodeID, Service: "client"}, target, false)
}

// dialXDSWith returns a proxyless client with the given bootstrap; with
// mtls it uses xDS credentials.
func dialXDSWith(t *testing.T, o bootstrap.Options, target string, mtls bool, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	bs, err := bootstrap.Proxyless(o)
	if err != nil {
		t.Fatal(err)
	}
	rb, err := xds.NewXDSResolverWithConfigForTesting(bs)
	if err != nil {
		t.Fatal(err)
	}
	creds := insecure.NewCredentials()
	if mtls {
		if creds, err = xdscreds.NewClientCredentials(xdscreds.ClientOptions{FallbackCreds: insecure.NewCredentials()}); err != nil {
			t.Fatal(err)
		}
	}
	cc, err := grpc.NewClient("xds:///"+target, append([]grpc.DialOption{grpc.WithResolvers(rb), grpc.WithTransportCredentials(creds)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// eventually polls f until it returns nil or the test timeout passes.
func eventually(t *testing.T, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(20 * time.Millisecond) // polling interval, not synchronisation
	}
	t.Fatalf("%s: not true after %s: %v", what, testTimeout, err)
}

// servedBy calls the service n times and returns which instances answered.
func servedBy(ctx context.Context, cc *grpc.ClientConn, n int) (map[string]int, error) {
	seen := map[string]int{}
	for i := 0; i < n; i++ {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		inst, err := clinical.Fetch(cctx, cc, "Observation")
		cancel()
		if err != nil {
			return seen, err
		}
		seen[inst]++
	}
	return seen, nil
}

func startSimProxy(t *testing.T, xdsAddr string, o simproxy.Options, dialOpts ...grpc.DialOption) *simproxy.Proxy {
	t.Helper()
	p, _ := startSimProxyCancel(t, xdsAddr, o, dialOpts...)
	return p
}

// startSimProxyCancel also returns a function that disconnects the proxy.
func startSimProxyCancel(t *testing.T, xdsAddr string, o simproxy.Options, dialOpts ...grpc.DialOption) (*simproxy.Proxy, func()) {
	t.Helper()
	dialOpts = append(dialOpts, grpc.WithTransportCredentials(insecure.NewCredentials()))
	conn, err := grpc.NewClient(xdsAddr, dialOpts...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); conn.Close() })
	p, err := simproxy.Start(ctx, conn, o)
	if err != nil {
		t.Fatal(err)
	}
	return p, func() { cancel(); conn.Close() }
}

func keys(m map[string]int) string { return fmt.Sprint(m) }

// svidDir writes an SVID for svc and the bundle into a directory, as
// `medmesh sidecar --svid-dir` keeps them.
func svidDir(t *testing.T, ca *certs.CA, svc string) string {
	t.Helper()
	id, err := ca.ServiceID("", svc)
	if err != nil {
		t.Fatal(err)
	}
	svid, err := ca.NewSVID(id)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), svc)
	if err := certs.WriteSVIDDir(dir, svid, ca.Bundle()); err != nil {
		t.Fatal(err)
	}
	return dir
}
