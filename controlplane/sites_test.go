package controlplane

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"medmesh/internal/metricstest"
	"medmesh/registry"
)

type peersSource struct{ peers []registry.PeerStatus }

func (s *peersSource) Name() string { return "peers" }
func (s *peersSource) Run(ctx context.Context, _ chan *registry.Catalog) error {
	<-ctx.Done()
	return nil
}
func (s *peersSource) Status() registry.SourceStatus { return registry.SourceStatus{Peers: s.peers} }

// The peer gauges follow the source's view of its peerings: a peering
// that stops being ACTIVE is stale since then, and withdrawn after the
// grace period; one that comes back is neither.
func TestPeerMetrics(t *testing.T) {
	since := time.Unix(1_800_000_000, 0)
	src := &peersSource{peers: []registry.PeerStatus{
		{Name: "north", Site: "north", State: "ACTIVE", Instances: 3},
		{Name: "south", Site: "south-dc", State: "FAILING", StaleSince: since, Instances: 2},
	}}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(peerCollector{src})
	for labels, want := range map[string]float64{"north,north": 0, "south,south-dc": 1} {
		if got := metricstest.Value(t, reg, "medmesh_peer_stale", labels); got != want {
			t.Errorf("medmesh_peer_stale{%s} = %v, want %v", labels, got, want)
		}
	}
	if got := metricstest.Value(t, reg, "medmesh_peer_stale_since_timestamp_seconds", "south,south-dc"); got != float64(since.Unix()) {
		t.Errorf("south stale since %v, want %v", got, since.Unix())
	}
	if n := len(metricstest.Find(t, reg, "medmesh_peer_stale_since_timestamp_seconds", "north,north")); n != 0 {
		t.Errorf("an ACTIVE peer has a stale-since time")
	}
	if got := metricstest.Value(t, reg, "medmesh_peer_imported_instances", "north,north"); got != 3 {
		t.Errorf("north's imported instances = %v, want 3", got)
	}
	src.peers[1].Withdrawn = true
	if got := metricstest.Value(t, reg, "medmesh_peer_imports_withdrawn", "south,south-dc"); got != 1 {
		t.Errorf("south withdrawn = %v, want 1", got)
	}
	src.peers[1].StaleSince, src.peers[1].Withdrawn, src.peers[1].State = time.Time{}, false, "ACTIVE"
	if got := metricstest.Value(t, reg, "medmesh_peer_stale", "south,south-dc"); got != 0 {
		t.Errorf("south stale after it came back = %v", got)
	}
	metricstest.Lint(t, reg)
}
