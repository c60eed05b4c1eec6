package meshapp

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	xdscreds "google.golang.org/grpc/credentials/xds"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/xds"

	"medmesh/api/wire"
)

// NewServer returns grpc-go's xDS server for an instance serving on
// 127.0.0.1:port, and a channel closed the first time it is SERVING, i.e.
// once the control plane has sent its inbound listener. Register services
// on it, then Serve.
//
// xDS credentials: the control plane decides. With mTLS on, the inbound
// listener names the bootstrap's certificate provider (the files `medmesh
// sidecar --svid-dir` keeps fresh), requires a client certificate and
// carries the RBAC built from Consul intentions; the plaintext fallback
// is used only when the control plane sends no security config at all
// (--mtls=false).
func NewServer(port int, log *slog.Logger, opts ...grpc.ServerOption) (*xds.GRPCServer, <-chan struct{}, error) {
	serving := make(chan struct{})
	var once sync.Once
	listener := wire.ProxylessServerListenerName("127.0.0.1", port)
	creds, err := xdscreds.NewServerCredentials(xdscreds.ServerOptions{FallbackCreds: insecure.NewCredentials()})
	if err != nil {
		return nil, nil, err
	}
	opts = append([]grpc.ServerOption{
		grpc.Creds(creds),
		// A span per call, child of the caller's (W3C traceparent in the
		// metadata): caller, callee and the PHI middleware's admission
		// span land in one trace. Span names are gRPC method names;
		// messages are not recorded.
		grpc.StatsHandler(otelgrpc.NewServerHandler()),
		xds.ServingModeCallback(func(addr net.Addr, a xds.ServingModeChangeArgs) {
			// Called on grpc-go's goroutines: log and signal, never block.
			if a.Mode == connectivity.ServingModeServing {
				log.Info("serving", "addr", addr.String(), "xds_listener", listener)
				once.Do(func() { close(serving) })
				return
			}
			log.Warn("not serving", "addr", addr.String(), "xds_listener", listener, "err", a.Err)
		}),
	}, opts...)
	srv, err := xds.NewGRPCServer(opts...)
	if err != nil {
		return nil, nil, err
	}
	return srv, serving, nil
}

// StopServer lets in-flight calls finish, but not forever: a caller that
// keeps a stream open must not keep a stopping instance alive.
func StopServer(srv *xds.GRPCServer, log *slog.Logger) {
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

// Dial returns a proxyless client of xds:///<service>. The xds resolver
// reads GRPC_XDS_BOOTSTRAP (see EnsureBootstrap); the target names the
// Consul service, medmesh names its listener after it. With xDS
// credentials the control plane decides: with mTLS on, the cluster's TLS
// context names the bootstrap's certificate provider (this workload's
// SVID) and the upstream's exact SPIFFE ID; the plaintext fallback is
// used only when it sends no security config (--mtls=false).
func Dial(service string, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	creds, err := xdscreds.NewClientCredentials(xdscreds.ClientOptions{FallbackCreds: insecure.NewCredentials()})
	if err != nil {
		return nil, err
	}
	return grpc.NewClient("xds:///"+service, append([]grpc.DialOption{grpc.WithTransportCredentials(creds),
		// The caller's span; it sends the trace context to the callee.
		grpc.WithStatsHandler(otelgrpc.NewClientHandler())}, opts...)...)
}

// PlaintextCaller stands for callers without a client certificate.
const PlaintextCaller = "plaintext"

// CallerID is the caller's SPIFFE ID from its verified client
// certificate, or PlaintextCaller. It is what the server's RBAC filter
// matched intentions against, so logging it shows who really called.
func CallerID(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return PlaintextCaller
	}
	return PeerID(p)
}

// PeerID is the SPIFFE ID in a peer's certificate, PlaintextCaller
// without one, or "none (no connection)" for a peer never connected to
// (what grpc.Peer holds after a call that reached no server).
func PeerID(p *peer.Peer) string {
	if p.Addr == nil && p.AuthInfo == nil {
		return "none (no connection)"
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.PeerCertificates) == 0 {
		return PlaintextCaller
	}
	id, err := x509svid.IDFromCert(ti.State.PeerCertificates[0])
	if err != nil {
		return "certificate without a SPIFFE ID"
	}
	return id.String()
}
