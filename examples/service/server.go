package main

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	xdscreds "google.golang.org/grpc/credentials/xds"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/xds"

	"medmesh/api/wire"
	"medmesh/examples/clinical"
)

// startServer serves examples/clinical on lis through grpc-go's xDS
// server. The returned channel closes the first time the server is
// SERVING, i.e. once the control plane has sent its inbound listener.
func startServer(lis net.Listener, o *options, log *slog.Logger, seen *callers) (*xds.GRPCServer, <-chan struct{}, error) {
	serving := make(chan struct{})
	var once sync.Once
	listener := wire.ProxylessServerListenerName("127.0.0.1", o.port)
	// xDS credentials: the control plane decides. With mTLS on, the
	// inbound listener names the bootstrap's certificate provider (the
	// files `medmesh sidecar --svid-dir` keeps fresh), requires a client
	// certificate and carries the RBAC built from Consul intentions; the
	// plaintext fallback is used only when the control plane sends no
	// security config at all (--mtls=false).
	creds, err := xdscreds.NewServerCredentials(xdscreds.ServerOptions{FallbackCreds: insecure.NewCredentials()})
	if err != nil {
		return nil, nil, err
	}
	srv, err := xds.NewGRPCServer(
		grpc.Creds(creds),
		xds.ServingModeCallback(func(addr net.Addr, a xds.ServingModeChangeArgs) {
			// Called on grpc-go's goroutines: log and signal, never block.
			if a.Mode == connectivity.ServingModeServing {
				log.Info("serving", "addr", addr.String(), "xds_listener", listener)
				once.Do(func() { close(serving) })
				return
			}
			log.Warn("not serving", "addr", addr.String(), "xds_listener", listener, "err", a.Err)
		}),
	)
	if err != nil {
		return nil, nil, err
	}
	clinical.Register(srv, &clinical.Server{Instance: o.id, Handle: func(ctx context.Context, _ string) error {
		seen.add(callerID(ctx))
		return nil
	}})
	go func() {
		if err := srv.Serve(lis); err != nil {
			log.Error("server stopped", "err", err)
		}
	}()
	return srv, serving, nil
}

// plaintextCaller stands for callers without a client certificate.
const plaintextCaller = "plaintext"

// callerID is the caller's SPIFFE ID from its verified client
// certificate, or plaintextCaller. It is what the server's RBAC filter
// matched intentions against, so logging it shows who really called.
func callerID(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return plaintextCaller
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.PeerCertificates) == 0 {
		return plaintextCaller
	}
	id, err := x509svid.IDFromCert(ti.State.PeerCertificates[0])
	if err != nil {
		return "certificate without a SPIFFE ID"
	}
	return id.String()
}

// callers counts the calls this server answered per caller identity
// between two summaries.
type callers struct {
	mu sync.Mutex
	n  servedBy
}

func (c *callers) add(id string) {
	c.mu.Lock()
	if c.n == nil {
		c.n = servedBy{}
	}
	c.n[id]++
	c.mu.Unlock()
}

// logEvery logs, every d until ctx ends, one line "served" with the
// calls per caller identity since the last line (none when idle). The
// demo parses it.
func (c *callers) logEvery(ctx context.Context, d time.Duration, log *slog.Logger) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		c.mu.Lock()
		n := c.n
		c.n = nil
		c.mu.Unlock()
		if len(n) > 0 {
			log.Info("served", "callers", n)
		}
	}
}

// stopServer lets in-flight calls finish, but not forever: a caller that
// keeps a stream open must not keep a stopping instance alive.
func stopServer(srv *xds.GRPCServer, log *slog.Logger) {
	done := make(chan struct{})
	go func() { srv.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		log.Warn("calls still in flight after 5s; stopping anyway")
		srv.Stop()
		<-done
	}
}
