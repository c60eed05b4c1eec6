package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/hashicorp/consul/api"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	xdscreds "google.golang.org/grpc/credentials/xds"
	"google.golang.org/grpc/xds"

	"medmesh/certs"
	"medmesh/controlplane"
	"medmesh/controlplane/bootstrap"
	"medmesh/examples/meshapp"
	"medmesh/examples/vitals/vitalsrpc"
	"medmesh/internal/consulagent"
	"medmesh/registry"
)

// mesh is a real Consul dev agent and an in-process control plane with
// mTLS on: the workloads below join it as proxyless gRPC services, each
// with its own bootstrap and SVID, as the vitals binary does.
type mesh struct {
	dir    string
	consul *consulagent.Agent
	ca     *certs.CA
	cp     *controlplane.ControlPlane
	cancel context.CancelFunc
}

func startMesh(ctx context.Context) (*mesh, error) {
	dir, err := os.MkdirTemp("", "medmesh-bench-realtime-")
	if err != nil {
		return nil, err
	}
	m := &mesh{dir: dir}
	if m.consul, err = consulagent.New(dir, true); err != nil {
		return nil, err
	}
	if err := m.consul.Start(ctx); err != nil {
		return nil, err
	}
	if m.ca, err = certs.New(certs.Options{TrustDomain: "medmesh.local", StateDir: filepath.Join(dir, "ca")}); err != nil {
		return nil, err
	}
	log := slog.New(slog.DiscardHandler)
	src := registry.NewConsul(registry.ConsulOptions{Client: m.consul.Client(), Coalesce: 20 * time.Millisecond, Logger: log})
	m.cp, err = controlplane.New(controlplane.Options{Logger: log, Source: src, Identities: m.ca,
		XDSListen: "127.0.0.1:0", AdminListen: "127.0.0.1:0"})
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithCancel(ctx)
	m.cancel = cancel
	go m.cp.Run(cctx)
	m.cp.XDSAddr()
	return m, nil
}

func (m *mesh) stop() {
	if m.cancel != nil {
		m.cancel()
	}
	if m.consul != nil {
		m.consul.Stop()
	}
	os.RemoveAll(m.dir)
}

// allow writes dst's intentions: these callers only.
func (m *mesh) allow(dst string, srcs ...string) error {
	e := &api.ServiceIntentionsConfigEntry{Kind: api.ServiceIntentions, Name: dst}
	for _, src := range srcs {
		e.Sources = append(e.Sources, &api.SourceIntention{Name: src, Action: api.IntentionActionAllow})
	}
	_, _, err := m.consul.Client().ConfigEntries().Set(e, nil)
	return err
}

// svid writes an SVID of svc and the bundle, as `medmesh sidecar
// --svid-dir` keeps them.
func (m *mesh) svid(svc string) (string, error) {
	id, err := m.ca.ServiceID("", svc)
	if err != nil {
		return "", err
	}
	s, err := m.ca.NewSVID(id)
	if err != nil {
		return "", err
	}
	dir := filepath.Join(m.dir, "svid", svc)
	return dir, certs.WriteSVIDDir(dir, s, m.ca.Bundle())
}

func (m *mesh) bootstrap(node, svc, svidDir string) ([]byte, error) {
	return bootstrap.Proxyless(bootstrap.Options{XDSAddress: m.cp.XDSAddr().String(), NodeID: node, Service: svc, SVIDDir: svidDir})
}

// serve runs an instance's xDS gRPC server on a free port and registers
// it in Consul (passing); it returns the server and the port.
func (m *mesh) serve(svc, id, svidDir string, meta map[string]string, register func(vitalsrpc.Registrar)) (*xds.GRPCServer, error) {
	bs, err := m.bootstrap(id, svc, svidDir)
	if err != nil {
		return nil, err
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := lis.Addr().(*net.TCPAddr).Port
	srv, _, err := meshapp.NewServer(port, slog.New(slog.DiscardHandler), xds.BootstrapContentsForTesting(bs))
	if err != nil {
		return nil, err
	}
	register(srv)
	go srv.Serve(lis)
	err = m.consul.Client().Agent().ServiceRegister(&api.AgentServiceRegistration{ID: id, Name: svc, Address: "127.0.0.1", Port: port, Meta: meta})
	return srv, err
}

// dial is a proxyless client of node (with svc's SVID) to xds:///target.
func (m *mesh) dial(node, svc, svidDir, target string) (*grpc.ClientConn, error) {
	bs, err := m.bootstrap(node, svc, svidDir)
	if err != nil {
		return nil, err
	}
	rb, err := xds.NewXDSResolverWithConfigForTesting(bs)
	if err != nil {
		return nil, err
	}
	creds, err := xdscreds.NewClientCredentials(xdscreds.ClientOptions{FallbackCreds: insecure.NewCredentials()})
	if err != nil {
		return nil, err
	}
	return grpc.NewClient("xds:///"+target, grpc.WithResolvers(rb), grpc.WithTransportCredentials(creds))
}

// poll waits for cond, at most limit.
func poll(ctx context.Context, limit time.Duration, what string, cond func() error) error {
	deadline := time.Now().Add(limit)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%s: %v", what, err)
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
}

func itoa(i int) string { return strconv.Itoa(i) }
