package extproc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"strings"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
)

// Listen opens addr: "unix:///path" (a stale socket file is replaced; the
// socket is 0660 so only the sidecar's group, i.e. Envoy, may connect)
// or host:port.
func Listen(addr string) (net.Listener, error) {
	if path, ok := strings.CutPrefix(addr, "unix://"); ok {
		if path == "" {
			return nil, fmt.Errorf("ext_proc listen %q: empty socket path", addr)
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("ext_proc listen %q: %w", addr, err)
		}
		lis, err := net.Listen("unix", path)
		if err != nil {
			return nil, fmt.Errorf("ext_proc listen %q: %w", addr, err)
		}
		if err := os.Chmod(path, 0o660); err != nil {
			lis.Close()
			return nil, fmt.Errorf("ext_proc listen %q: %w", addr, err)
		}
		return lis, nil
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("ext_proc listen %q: %w", addr, err)
	}
	return lis, nil
}

// NewGRPCServer returns a gRPC server with the ext_proc service and the
// standard health service (for Envoy's gRPC health checks of the
// ext_proc cluster).
func NewGRPCServer(s *Server) (*grpc.Server, *health.Server) {
	// The codec sends the answers encoded once as they are (encoded.go).
	s.encoded = true
	g := grpc.NewServer(
		grpc.ForceServerCodecV2(newCodec()),
		// Envoy opens a stream per HTTP request, and gRPC starts a
		// goroutine per stream by default, whose stack then grows (copied,
		// its frames walked) through the same decode on every request.
		// Workers keep their grown stacks. A stream's handler lasts as
		// long as its request (it waits for the response headers while
		// the upstream works), so there are as many workers as requests
		// normally in flight, the scheduler's limit, not as CPUs; past
		// them (requests queued for a slot, an adaptive limit grown), a
		// stream gets its own goroutine as before, so nothing waits for a
		// worker. One request at a time, `go run ./bench/extproc`
		// measured p50 163 -> 149 us and p99 315 -> 274 us with workers
		// (2, 4 and 64 alike). The option is marked experimental in
		// grpc-go.
		grpc.NumStreamWorkers(uint32(max(runtime.GOMAXPROCS(0), s.engine.Limit()))),
		// Envoy opens one stream per HTTP request on a few long-lived
		// HTTP/2 connections; allow as many concurrent streams as the
		// scheduler can hold so the queue, not HTTP/2, decides.
		grpc.MaxConcurrentStreams(1<<16),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	)
	extprocv3.RegisterExternalProcessorServer(g, s)
	h := health.NewServer()
	healthpb.RegisterHealthServer(g, h)
	h.SetServingStatus(extprocv3.ExternalProcessor_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	return g, h
}

// Serve runs g on lis until ctx ends, then stops: gracefully for up to
// grace (in-flight requests finish), then hard.
func Serve(ctx context.Context, g *grpc.Server, lis net.Listener, grace time.Duration) error {
	errc := make(chan error, 1)
	go func() { errc <- g.Serve(lis) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	done := make(chan struct{})
	go func() { g.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace):
		g.Stop()
	}
	return nil
}
