package xds

import (
	"context"
	"testing"
	"time"

	"medmesh/api/wire"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/types/known/structpb"
)

// SotW and delta streams are numbered by separate counters in
// go-control-plane: stream 1 of each must be two proxies, not one.
func TestTrackerKeepsSotWAndDeltaStreamsApart(t *testing.T) {
	tr := NewTracker(NewMetrics(nil))
	ctx := context.Background()
	if err := tr.OnStreamOpen(ctx, 1, ""); err != nil {
		t.Fatal(err)
	}
	if err := tr.OnDeltaStreamOpen(ctx, 1, ""); err != nil {
		t.Fatal(err)
	}
	tr.OnStreamRequest(1, &discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "a"}, TypeUrl: resource.ClusterType})
	tr.OnStreamDeltaRequest(1, &discoveryv3.DeltaDiscoveryRequest{Node: &corev3.Node{Id: "b"}, TypeUrl: resource.ClusterType})
	got := tr.Statuses()
	if len(got) != 2 || got[0].ID != "a" || got[0].Transport != "sotw" || got[1].ID != "b" || got[1].Transport != "delta" {
		t.Fatalf("statuses = %+v", got)
	}
	tr.OnDeltaStreamClosed(1, nil)
	if got := tr.Connected(); len(got) != 1 || got[0].ID != "a" {
		t.Fatalf("after closing the delta stream: %+v", got)
	}
}

func TestTrackerACKAndNACK(t *testing.T) {
	tr := NewTracker(NewMetrics(nil))
	clock := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	tr.now = func() time.Time { return clock }
	tr.OnStreamOpen(context.Background(), 7, "")
	tr.OnStreamRequest(7, &discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "emr-1", Cluster: "emr"}, TypeUrl: resource.ClusterType})
	tr.OnStreamResponse(context.Background(), 7, nil, &discoveryv3.DiscoveryResponse{TypeUrl: resource.ClusterType, VersionInfo: "v1", Nonce: "1"})
	tr.OnStreamRequest(7, &discoveryv3.DiscoveryRequest{TypeUrl: resource.ClusterType, VersionInfo: "v1", ResponseNonce: "1"})
	ackedAt := clock
	clock = clock.Add(time.Minute)
	tr.OnStreamResponse(context.Background(), 7, nil, &discoveryv3.DiscoveryResponse{TypeUrl: resource.ClusterType, VersionInfo: "v2", Nonce: "2"})
	nack := &discoveryv3.DiscoveryRequest{
		TypeUrl: resource.ClusterType, VersionInfo: "v1", ResponseNonce: "2",
		ErrorDetail: &status.Status{Code: 3, Message: "bad cluster"},
	}
	tr.OnStreamRequest(7, nack)
	// The NACK is rewritten to name the rejected version, so the snapshot
	// cache does not send v2 straight back.
	if nack.VersionInfo != "v2" {
		t.Errorf("NACK version = %q, want v2", nack.VersionInfo)
	}
	st := tr.Statuses()[0]
	// A NACK is not an ACK: the age of the last ACK keeps growing.
	if st.Types["CDS"].Acked != "v1" || st.Types["CDS"].Sent != "v2" || !st.Types["CDS"].AckedAt.Equal(ackedAt) {
		t.Errorf("CDS = %+v, want acked v1 at %s, sent v2", st.Types["CDS"], ackedAt)
	}
	if st.LastNACK == nil || st.LastNACK.Version != "v2" || st.LastNACK.Message != "bad cluster" || st.NACKs != 1 {
		t.Errorf("last NACK = %+v (%d)", st.LastNACK, st.NACKs)
	}
	// A request with an unknown nonce is neither an ACK nor a NACK.
	tr.OnStreamRequest(7, &discoveryv3.DiscoveryRequest{TypeUrl: resource.ClusterType, VersionInfo: "v9", ResponseNonce: "99"})
	if got := tr.Statuses()[0].Types["CDS"].Acked; got != "v1" {
		t.Errorf("acked = %q after an unknown nonce", got)
	}
}

func TestProxyKindOf(t *testing.T) {
	meta := func(v string) *structpb.Struct {
		return &structpb.Struct{Fields: map[string]*structpb.Value{wire.NodeMetaProxyKind: structpb.NewStringValue(v)}}
	}
	for _, tc := range []struct {
		node *corev3.Node
		want wire.ProxyKind
	}{
		{&corev3.Node{Metadata: meta("proxyless")}, wire.ProxyProxyless},
		{&corev3.Node{Metadata: meta("envoy"), UserAgentName: "gRPC Go"}, wire.ProxyEnvoy},
		{&corev3.Node{UserAgentName: "gRPC Go"}, wire.ProxyProxyless},
		{&corev3.Node{UserAgentName: "envoy"}, wire.ProxyEnvoy},
		{nil, wire.ProxyEnvoy},
	} {
		if got := ProxyKindOf(tc.node); got != tc.want {
			t.Errorf("ProxyKindOf(%v) = %s, want %s", tc.node, got, tc.want)
		}
	}
}

// A proxyless server's listener requests are kept per stream: state of
// the world replaces the set, delta adds and drops; names that are not
// server listeners (a client's API listeners) are not kept.
func TestTrackerServerListeners(t *testing.T) {
	tr := NewTracker(NewMetrics(nil))
	ctx := context.Background()
	tr.OnStreamOpen(ctx, 1, "")
	a, b := wire.ProxylessServerListenerName("0.0.0.0", 18551), wire.ProxylessServerListenerName("::", 18551)
	tr.OnStreamRequest(1, &discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "emr-1"}, TypeUrl: resource.ListenerType,
		ResourceNames: []string{"emr", a}})
	if got := tr.Statuses()[0].ServerListeners; len(got) != 1 || got[0] != a {
		t.Fatalf("SotW: server listeners %v, want [%s]", got, a)
	}
	tr.OnStreamRequest(1, &discoveryv3.DiscoveryRequest{TypeUrl: resource.ListenerType, ResourceNames: []string{b}})
	if got := tr.Statuses()[0].ServerListeners; len(got) != 1 || got[0] != b {
		t.Fatalf("SotW replaces: server listeners %v, want [%s]", got, b)
	}
	tr.OnDeltaStreamOpen(ctx, 1, "")
	tr.OnStreamDeltaRequest(1, &discoveryv3.DeltaDiscoveryRequest{Node: &corev3.Node{Id: "emr-1"}, TypeUrl: resource.ListenerType,
		ResourceNamesSubscribe: []string{a}})
	if got := tr.Statuses()[0].ServerListeners; len(got) != 2 {
		t.Fatalf("delta adds: server listeners %v, want both", got)
	}
	tr.OnStreamDeltaRequest(1, &discoveryv3.DeltaDiscoveryRequest{TypeUrl: resource.ListenerType, ResourceNamesUnsubscribe: []string{a}})
	tr.OnStreamClosed(1, nil)
	if got := tr.Statuses()[0].ServerListeners; len(got) != 0 {
		t.Fatalf("after unsubscribing and closing the SotW stream: %v", got)
	}
}
