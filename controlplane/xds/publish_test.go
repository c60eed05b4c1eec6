package xds

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	dto "github.com/prometheus/client_model/go"

	"medmesh/api/wire"
	"medmesh/controlplane/ir"
	"medmesh/registry"
)

func testMesh(t *testing.T, services ...string) *ir.Mesh {
	t.Helper()
	var raw []registry.RawInstance
	for i, s := range services {
		raw = append(raw, registry.RawInstance{ServiceName: s, ID: s + "-1", Address: "10.0.0.1", Port: 9000 + i,
			Health: registry.HealthPassing, ServiceMeta: map[string]string{registry.MetaProtocol: "grpc"}})
	}
	cat, _ := registry.BuildCatalog(raw)
	return ir.Build(ir.Inputs{Catalog: cat, Defaults: ir.DefaultDefaults(), TrustDomain: "medmesh.local"})
}

func roundProxy(m *ir.Mesh, id string, kind wire.ProxyKind) RoundProxy {
	rp := RoundProxy{Proxy: ir.Proxy{ID: id, Kind: kind}}
	if svc, inst, ok := m.Instance(id); ok {
		rp.Proxy.Service, rp.Proxy.Instance = svc.Name, inst
	}
	return rp
}

func counter(t *testing.T, s *Server) float64 {
	t.Helper()
	var m dto.Metric
	if err := s.metrics.snapshots.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// Publish serves a round whole: every proxy gets a consistent snapshot
// (its clusters' endpoints were published first), an unchanged proxy is
// not translated again, a departed proxy and a removed service's
// endpoints are dropped, and a proxy that could not be prepared keeps
// what it had.
func TestPublishRound(t *testing.T) {
	s := newTestServer(t)
	ctx := context.Background()
	mesh := testMesh(t, "emr", "his")
	round := Round{Mesh: mesh, Proxies: []RoundProxy{
		roundProxy(mesh, "emr-1", wire.ProxyEnvoy), roundProxy(mesh, "client", wire.ProxyProxyless),
	}}
	rep, err := s.Publish(ctx, round)
	if err != nil || len(rep.Failed) != 0 {
		t.Fatalf("first round: err=%v failed=%v", err, rep.Failed)
	}
	if fmt.Sprint(rep.Pushed) != "[emr-1 client]" {
		t.Errorf("first round pushed %v, want both proxies", rep.Pushed)
	}
	for _, id := range []string{"emr-1", "client"} {
		if _, ok := s.PublishedFor(id); !ok {
			t.Fatalf("%s: nothing published", id)
		}
	}
	if _, ok := s.epHashes["his"]; !ok {
		t.Fatal("his endpoints not published")
	}
	emr, _ := s.PublishedFor("emr-1")
	if len(emr.snapshot.GetResources(resource.ListenerType)) == 0 {
		t.Fatal("emr-1 got no listeners")
	}

	// The inputs of emr-1's own resources are remembered, so the next
	// round skips translating it.
	if s.publishedInputs("emr-1") == "" {
		t.Fatal("emr-1's inputs were not recorded")
	}
	before := counter(t, s)
	if rep, err := s.Publish(ctx, round); err != nil {
		t.Fatal(err)
	} else if len(rep.Pushed) != 0 {
		t.Fatalf("an unchanged round pushed %v", rep.Pushed)
	}
	if after := counter(t, s); after != before {
		t.Fatalf("an unchanged round set %v snapshots", after-before)
	}

	// his is removed and the proxyless client has gone.
	smaller := testMesh(t, "emr")
	rep, err = s.Publish(ctx, Round{Mesh: smaller, Proxies: []RoundProxy{roundProxy(smaller, "emr-1", wire.ProxyEnvoy)}})
	if err != nil || len(rep.Failed) != 0 {
		t.Fatalf("second round: err=%v failed=%v", err, rep.Failed)
	}
	if _, ok := s.PublishedFor("client"); ok {
		t.Fatal("a departed proxy is still published")
	}
	if _, ok := s.epHashes["his"]; ok {
		t.Fatal("a removed service's endpoints are still served")
	}

	// A proxy that could not be prepared keeps its last snapshot.
	kept, _ := s.PublishedFor("emr-1")
	failing := roundProxy(mesh, "emr-1", wire.ProxyEnvoy)
	failing.Err = errors.New("proxy \"emr-1\": issuing an SVID: CA unavailable")
	rep, err = s.Publish(ctx, Round{Mesh: mesh, Proxies: []RoundProxy{failing}})
	if err != nil || len(rep.Failed) != 1 {
		t.Fatalf("failing proxy: err=%v failed=%v, want one failure", err, rep.Failed)
	}
	if now, ok := s.PublishedFor("emr-1"); !ok || now.snapshot != kept.snapshot {
		t.Fatal("a proxy that could not be prepared lost its snapshot")
	}
}
