package integration

import (
	"context"
	"fmt"
	"sync"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
)

// recorder watches every xDS response a client receives, below the
// client's own logic, so a test can prove the control plane never sent a
// full-state listener or cluster response smaller than the mesh, nor a
// delta response removing clusters or listeners.
type recorder struct {
	mu sync.Mutex
	// minFull is the smallest acceptable SotW LDS/CDS response, by type.
	minFull map[string]int
	bad     []string
}

func (r *recorder) setMin(typeURL string, n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.minFull == nil {
		r.minFull = map[string]int{}
	}
	r.minFull[typeURL] = n
}

func (r *recorder) violations() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.bad...)
}

func (r *recorder) check(m any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch resp := m.(type) {
	case *discoveryv3.DiscoveryResponse:
		t := resp.GetTypeUrl()
		if t != resource.ListenerType && t != resource.ClusterType {
			return
		}
		if n := len(resp.GetResources()); n < r.minFull[t] {
			r.bad = append(r.bad, fmt.Sprintf("SotW %s response with %d resources (want >= %d)", t, n, r.minFull[t]))
		}
	case *discoveryv3.DeltaDiscoveryResponse:
		t := resp.GetTypeUrl()
		if (t == resource.ListenerType || t == resource.ClusterType) && len(resp.GetRemovedResources()) > 0 && r.minFull[t] > 0 {
			r.bad = append(r.bad, fmt.Sprintf("delta %s response removed %v", t, resp.GetRemovedResources()))
		}
	}
}

func (r *recorder) interceptor() grpc.StreamClientInterceptor {
	return func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		s, err := streamer(ctx, desc, cc, method, opts...)
		if err != nil {
			return nil, err
		}
		return &recordingStream{ClientStream: s, r: r}, nil
	}
}

type recordingStream struct {
	grpc.ClientStream
	r *recorder
}

func (s *recordingStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if err == nil {
		s.r.check(m)
	}
	return err
}

// countingRecorder lists the type of every xDS response received.
type countingRecorder struct {
	mu    sync.Mutex
	types []string
}

func (r *countingRecorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.types)
}

func (r *countingRecorder) typesSince(i int) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.types[i:]...)
}

func (r *countingRecorder) interceptor() grpc.StreamClientInterceptor {
	return func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		s, err := streamer(ctx, desc, cc, method, opts...)
		if err != nil {
			return nil, err
		}
		return &countingStream{ClientStream: s, r: r}, nil
	}
}

type countingStream struct {
	grpc.ClientStream
	r *countingRecorder
}

func (s *countingStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if resp, ok := m.(*discoveryv3.DiscoveryResponse); err == nil && ok {
		s.r.mu.Lock()
		s.r.types = append(s.r.types, resp.GetTypeUrl())
		s.r.mu.Unlock()
	}
	return err
}
