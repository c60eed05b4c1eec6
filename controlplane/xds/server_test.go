package xds

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"reflect"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"medmesh/api/wire"
)

func newTestServer(t *testing.T) *Server {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return New(ctx, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
}

func edsCluster(name string) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{EdsConfig: &corev3.ConfigSource{
			ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
		}},
	}
}

func hashed(t *testing.T, rs ...types.Resource) []Hashed {
	t.Helper()
	h, err := HashAll(rs, nil)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// Proxies with equal content share one set; sets go when unused.
func TestPublishProxySharesEqualSets(t *testing.T) {
	s := newTestServer(t)
	if _, err := s.publishEndpoints(hashed(t, &endpointv3.ClusterLoadAssignment{ClusterName: "emr"})); err != nil {
		t.Fatal(err)
	}
	res := ProxyResources{resource.ClusterType: hashed(t, edsCluster("emr"))}
	ctx := context.Background()
	for _, id := range []string{"a", "b"} {
		changed, err := s.publishSnapshot(ctx, id, wire.ProxyEnvoy, newShared(res), nil)
		if err != nil || !changed {
			t.Fatalf("publish %s: changed=%t err=%v", id, changed, err)
		}
	}
	a, _ := s.envoy.GetSnapshot("a")
	b, _ := s.envoy.GetSnapshot("b")
	ca := a.GetResources(resource.ClusterType)
	cb := b.GetResources(resource.ClusterType)
	if reflect.ValueOf(a.(interface {
		GetVersionMap(string) map[string]string
	}).GetVersionMap(resource.ClusterType)).Pointer() != reflect.ValueOf(b.(interface {
		GetVersionMap(string) map[string]string
	}).GetVersionMap(resource.ClusterType)).Pointer() || len(ca) != 1 || len(cb) != 1 {
		t.Fatal("equal cluster sets are not shared")
	}
	// Publishing the same content again is not a change.
	if changed, err := s.publishSnapshot(ctx, "a", wire.ProxyEnvoy, newShared(res), nil); err != nil || changed {
		t.Fatalf("republish: changed=%t err=%v", changed, err)
	}
	s.forget("a")
	if len(s.interned) == 0 {
		t.Fatal("set released while proxy b still uses it")
	}
	s.forget("b")
	if len(s.interned) != 0 {
		t.Fatalf("%d sets left after every proxy left", len(s.interned))
	}
}

// A snapshot naming endpoints that are not served is refused and the
// proxy keeps what it had.
func TestPublishProxyRefusesInconsistentSnapshot(t *testing.T) {
	s := newTestServer(t)
	res := ProxyResources{resource.ClusterType: hashed(t, edsCluster("imaging"))}
	_, err := s.publishSnapshot(context.Background(), "a", wire.ProxyEnvoy, newShared(res), nil)
	if !errors.Is(err, ErrInconsistent) {
		t.Fatalf("err = %v, want ErrInconsistent", err)
	}
	if _, err := s.envoy.GetSnapshot("a"); err == nil {
		t.Fatal("an inconsistent snapshot was set")
	}
	s.releaseUnused()
	if len(s.interned) != 0 {
		t.Fatalf("refused snapshot left %d sets behind", len(s.interned))
	}
}

// Unchanged endpoint content is not re-published.
func TestPublishEndpointsOnlyChanges(t *testing.T) {
	s := newTestServer(t)
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: "emr"}
	if n, _ := s.publishEndpoints(hashed(t, cla)); n != 1 {
		t.Fatalf("first publish updated %d", n)
	}
	if n, _ := s.publishEndpoints(hashed(t, &endpointv3.ClusterLoadAssignment{ClusterName: "emr"})); n != 0 {
		t.Fatalf("same content updated %d", n)
	}
	if err := s.pruneEndpoints(nil); err != nil {
		t.Fatal(err)
	}
	if got := s.endpoints.size(); got != 0 {
		t.Fatalf("%d endpoint sets after pruning", got)
	}
}
