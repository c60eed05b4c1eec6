package xds

import (
	"maps"
	"slices"
	"testing"

	"medmesh/controlplane/ir"
	"medmesh/registry"
)

// A change of instances alone re-translates only the changed service's
// endpoint assignments, and the result is exactly what translating the
// new mesh from scratch gives.
func TestTranslateSharedEndpointsAlone(t *testing.T) {
	build := func(critical string) *ir.Mesh {
		var raw []registry.RawInstance
		for i, s := range []string{"emr", "his", "vitals"} {
			for j, id := range []string{s + "-1", s + "-2"} {
				h := registry.HealthPassing
				if id == critical {
					h = registry.HealthCritical
				}
				raw = append(raw, registry.RawInstance{ServiceName: s, ID: id, Address: "10.0.0.1", Port: 9000 + 10*i + j,
					Health: h, ServiceMeta: map[string]string{registry.MetaProtocol: "http"}})
			}
		}
		cat, _ := registry.BuildCatalog(raw)
		return ir.Build(ir.Inputs{Catalog: cat, Defaults: ir.DefaultDefaults(), TrustDomain: "medmesh.local"})
	}
	_, memo, err := translateShared(nil, build(""))
	if err != nil {
		t.Fatal(err)
	}
	next := build("his-2")
	got, gotMemo, err := translateShared(memo, next)
	if err != nil {
		t.Fatal(err)
	}
	want, wantMemo, err := translateShared(nil, next)
	if err != nil {
		t.Fatal(err)
	}

	hashes := func(hs []Hashed) map[string]string {
		out := map[string]string{}
		for _, h := range hs {
			out[h.Name] = h.Hash
		}
		return out
	}
	if g, w := hashes(got.endpoints), hashes(want.endpoints); !maps.Equal(g, w) {
		t.Errorf("endpoints after the change: %v, from scratch %v", g, w)
	}
	if g, w := hashes(got.meshWide), hashes(want.meshWide); !maps.Equal(g, w) {
		t.Errorf("mesh-wide resources after the change: %v, from scratch %v", g, w)
	}
	for name, m := range gotMemo {
		w := wantMemo[name]
		if m.key != w.key || m.endpointsKey != w.endpointsKey || m.contentKey != w.contentKey || m.scopeKey != w.scopeKey {
			t.Errorf("%s: memo keys differ from a translation from scratch", name)
		}
		if g, w := slices.Sorted(maps.Values(m.hashes)), slices.Sorted(maps.Values(w.hashes)); !slices.Equal(g, w) {
			t.Errorf("%s: resource hashes %v, from scratch %v", name, g, w)
		}
	}

	his, before := gotMemo["his"], memo["his"]
	if his.set.EnvoyCluster != before.set.EnvoyCluster || his.set.EnvoyVirtualHost != before.set.EnvoyVirtualHost {
		t.Error("his: its cluster and virtual host were translated again for a change of its endpoints")
	}
	if his.set.Endpoints == before.set.Endpoints || his.endpointsKey == before.endpointsKey {
		t.Error("his: its endpoints were not translated again")
	}
	if gotMemo["emr"] != memo["emr"] {
		t.Error("emr: an unchanged service was translated again")
	}
}
