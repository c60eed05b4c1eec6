package xds

import (
	"context"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/genproto/googleapis/rpc/status"

	"medmesh/internal/metricstest"
)

// A NACK stands until the proxy next ACKs the type; the gauges say how
// many stand and since when, push latency is timed from the response to
// its answer, and convergence from the change to the last ACK it needs.
func TestMetricsStandingNACKLatencyAndConvergence(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	tr := NewTracker(NewMetrics(reg))
	reg.MustRegister(standingNACKs{tr})
	clock := time.Unix(1_800_000_000, 0)
	tr.now = func() time.Time { return clock }
	ctx := context.Background()

	tr.OnStreamOpen(ctx, 1, "")
	tr.OnStreamRequest(1, &discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "emr-1", Cluster: "emr"}, TypeUrl: resource.ClusterType})
	start := clock.Add(-time.Second) // the change reached the loop a second before the push
	tr.expectConvergence("emr-1", start, map[string]string{resource.ClusterType: "v1", resource.ListenerType: "l1"})
	tr.OnStreamResponse(ctx, 1, nil, &discoveryv3.DiscoveryResponse{TypeUrl: resource.ClusterType, VersionInfo: "v1", Nonce: "1"})
	clock = clock.Add(250 * time.Millisecond)
	nackAt := clock
	tr.OnStreamRequest(1, &discoveryv3.DiscoveryRequest{TypeUrl: resource.ClusterType, ResponseNonce: "1",
		ErrorDetail: &status.Status{Code: 3, Message: "bad cluster"}})

	if got := metricstest.Value(t, reg, "medmesh_xds_proxies_nacking", "CDS"); got != 1 {
		t.Errorf("proxies nacking CDS = %v, want 1", got)
	}
	if got := metricstest.Value(t, reg, "medmesh_xds_proxies_nacking", "LDS"); got != 0 {
		t.Errorf("proxies nacking LDS = %v, want 0 (present from the start)", got)
	}
	if got := metricstest.Value(t, reg, "medmesh_xds_standing_nack_oldest_timestamp_seconds", "CDS"); got != float64(nackAt.UnixNano())/1e9 {
		t.Errorf("oldest standing NACK = %v, want %v", got, nackAt)
	}
	if got := metricstest.Value(t, reg, "medmesh_xds_nacks_total", "CDS"); got != 1 {
		t.Errorf("nacks_total{CDS} = %v, want 1", got)
	}
	if n, sum := metricstest.Histogram(t, reg, "medmesh_xds_push_latency_seconds", "CDS"); n != 1 || sum != 0.25 {
		t.Errorf("push latency CDS: %d samples summing %vs, want 1 of 0.25s", n, sum)
	}
	if n, _ := metricstest.Histogram(t, reg, "medmesh_xds_convergence_seconds", ""); n != 0 {
		t.Errorf("a NACKed push counted as converged (%d samples)", n)
	}

	// A second NACK a minute later keeps the first one's time; the fix,
	// ACKed, ends it and converges.
	clock = clock.Add(time.Minute)
	tr.OnStreamResponse(ctx, 1, nil, &discoveryv3.DiscoveryResponse{TypeUrl: resource.ClusterType, VersionInfo: "v1", Nonce: "2"})
	tr.OnStreamRequest(1, &discoveryv3.DiscoveryRequest{TypeUrl: resource.ClusterType, ResponseNonce: "2",
		ErrorDetail: &status.Status{Code: 3, Message: "bad cluster"}})
	if got := metricstest.Value(t, reg, "medmesh_xds_standing_nack_oldest_timestamp_seconds", "CDS"); got != float64(nackAt.UnixNano())/1e9 {
		t.Errorf("oldest standing NACK after a second NACK = %v, want the first's %v", got, nackAt)
	}
	start = clock
	tr.expectConvergence("emr-1", start, map[string]string{resource.ClusterType: "v2", resource.ListenerType: "l1"})
	tr.OnStreamResponse(ctx, 1, nil, &discoveryv3.DiscoveryResponse{TypeUrl: resource.ClusterType, VersionInfo: "v2", Nonce: "3"})
	clock = clock.Add(2 * time.Second)
	tr.OnStreamRequest(1, &discoveryv3.DiscoveryRequest{TypeUrl: resource.ClusterType, VersionInfo: "v2", ResponseNonce: "3"})
	if got := metricstest.Value(t, reg, "medmesh_xds_proxies_nacking", "CDS"); got != 0 {
		t.Errorf("proxies nacking CDS after the ACK = %v, want 0", got)
	}
	if metricstest.Has(t, reg, "medmesh_xds_standing_nack_oldest_timestamp_seconds") {
		t.Error("an oldest standing NACK is reported after the ACK")
	}
	// LDS was not subscribed to: the push converged on the CDS ACK.
	if n, sum := metricstest.Histogram(t, reg, "medmesh_xds_convergence_seconds", ""); n != 1 || sum != 2 {
		t.Errorf("convergence: %d samples summing %vs, want 1 of 2s", n, sum)
	}

	// A proxy that leaves takes its standing NACKs with it.
	tr.OnStreamResponse(ctx, 1, nil, &discoveryv3.DiscoveryResponse{TypeUrl: resource.ClusterType, VersionInfo: "v3", Nonce: "4"})
	tr.OnStreamRequest(1, &discoveryv3.DiscoveryRequest{TypeUrl: resource.ClusterType, ResponseNonce: "4",
		ErrorDetail: &status.Status{Code: 3, Message: "bad"}})
	if got := metricstest.Value(t, reg, "medmesh_xds_proxies_nacking", "CDS"); got != 1 {
		t.Fatalf("proxies nacking CDS = %v, want 1", got)
	}
	tr.OnStreamClosed(1, nil)
	if got := metricstest.Value(t, reg, "medmesh_xds_proxies_nacking", "CDS"); got != 0 {
		t.Errorf("proxies nacking CDS after it left = %v, want 0", got)
	}
	if got := metricstest.Value(t, reg, "medmesh_xds_connected_proxies", ""); got != 0 {
		t.Errorf("connected proxies = %v, want 0", got)
	}
	metricstest.Lint(t, reg)
}
