package integration

import (
	"context"
	"fmt"
	"testing"

	"github.com/hashicorp/consul/api"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestProxylessRetriesAndRingHash: the service's retry policy and LB
// policy reach grpc-go. An instance that answers UNAVAILABLE is retried on
// another one, so callers see no failures; a ring_hash service keeps one
// channel on one instance.
func TestProxylessRetriesAndRingHash(t *testing.T) {
	consul := startConsul(t, true)
	c := consul.Client()
	cp := startControlPlane(t, consulSource(consul))
	ctx := context.Background()

	// his-1 refuses every call as UNAVAILABLE ("not processed"), his-2 serves.
	meta := map[string]string{"medmesh-kind": "his", "medmesh-protocol": "grpc"}
	for _, id := range []string{"his-1", "his-2"} {
		port := freePort(t)
		startXDSServer(t, cp.xdsAddr(), "his", id, port)
		register(t, c, "his", id, port, meta, api.HealthPassing)
	}
	failing.Store("his-1", true)
	cc := dialXDS(t, cp.xdsAddr(), "retry-client", "his")
	eventually(t, "his reachable", func() error { _, err := servedBy(ctx, cc, 1); return err })
	seen, err := servedBy(ctx, cc, 40)
	if err != nil {
		t.Fatalf("a call failed although a healthy instance could serve it (retries not applied?): %v (seen %v)", err, seen)
	}
	if seen["his-1"] != 0 {
		t.Fatalf("failing instance reported success: %v", seen)
	}

	// ring_hash: one channel, one instance.
	rh := map[string]string{"medmesh-kind": "imaging", "medmesh-protocol": "grpc", "medmesh-lb": "ring_hash"}
	for _, id := range []string{"imaging-1", "imaging-2", "imaging-3"} {
		port := freePort(t)
		startXDSServer(t, cp.xdsAddr(), "imaging", id, port)
		register(t, c, "imaging", id, port, rh, api.HealthPassing)
	}
	cc2 := dialXDS(t, cp.xdsAddr(), "ring-client", "imaging")
	eventually(t, "imaging has all three instances in its ring", func() error {
		// Until all three are known the ring may move; wait for EDS.
		_, err := servedBy(ctx, cc2, 1)
		return err
	})
	eventually(t, "a channel sticks to one instance", func() error {
		seen, err := servedBy(ctx, cc2, 30)
		if err != nil {
			return err
		}
		if len(seen) != 1 {
			return fmt.Errorf("calls spread over %v", seen)
		}
		return nil
	})
}

// errUnavailable is what a failing test instance answers.
var errUnavailable = status.Error(codes.Unavailable, "instance draining")
