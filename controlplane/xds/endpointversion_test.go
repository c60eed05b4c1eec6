package xds

import (
	"math/rand/v2"
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/stream/v3"
)

// sotwFirst subscribes a new SotW stream and returns the first response.
func sotwFirst(t *testing.T, c *endpointCache, version string, names []string) (cache.Response, *stream.Subscription) {
	t.Helper()
	s := stream.NewSotwSubscription(names, true)
	sub := &s
	ch := make(chan cache.Response, 1)
	if _, err := c.CreateWatch(&cache.Request{TypeUrl: resource.EndpointType, VersionInfo: version, ResourceNames: names}, *sub, ch); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-ch:
		sub.SetReturnedResources(r.GetReturnedResources())
		return r, sub
	default:
		return nil, sub
	}
}

// Two control planes (a restart) that reach the same content by different
// paths serve the same versions: per resource, per SotW response and per
// delta response.
func TestEndpointVersionsAreContentDerived(t *testing.T) {
	a, b := newEndpointCache(), newEndpointCache()
	a.update(append(cla(t, "emr", 1), cla(t, "his", 1)...), nil)
	a.update(cla(t, "emr", 2), nil)
	b.update(cla(t, "his", 1), nil)
	b.update(append(cla(t, "emr", 2), cla(t, "imaging", 1)...), nil)
	b.update(nil, []string{"imaging"})
	names := []string{"emr", "his"}
	ra, _ := sotwFirst(t, a, "", names)
	rb, _ := sotwFirst(t, b, "", names)
	if ra.GetResponseVersion() != rb.GetResponseVersion() {
		t.Fatalf("SotW versions differ for equal content: %s vs %s", ra.GetResponseVersion(), rb.GetResponseVersion())
	}
	if a.fold != b.fold {
		t.Fatal("delta system versions differ for equal content")
	}
	for _, n := range names {
		if a.res[n].hash != b.res[n].hash {
			t.Fatalf("resource version of %s differs", n)
		}
	}
	// A different subscription or content has another version.
	if r, _ := sotwFirst(t, a, "", []string{"emr"}); r.GetResponseVersion() == ra.GetResponseVersion() {
		t.Fatal("a smaller subscription has the same version")
	}
}

// A SotW proxy reconnecting to a restarted control plane with the version
// it holds gets that version back and no assignment; one holding another
// version gets everything.
func TestEndpointSotWResume(t *testing.T) {
	before := newEndpointCache()
	before.update(append(cla(t, "emr", 1), cla(t, "his", 3)...), nil)
	names := []string{"emr", "his", "imaging"} // imaging does not exist
	held, _ := sotwFirst(t, before, "", names)

	after := newEndpointCache()
	resp, sub := sotwFirst(t, after, held.GetResponseVersion(), names)
	if resp != nil {
		t.Fatal("answered before the first publication")
	}
	after.update(append(cla(t, "his", 3), cla(t, "emr", 1)...), nil)
	// The parked request is answered on opening: version only.
	resp, sub = sotwFirst(t, after, held.GetResponseVersion(), names)
	if resp == nil {
		t.Fatal("resumed stream not answered")
	}
	if got := sotwNames(t, resp); len(got) != 0 || resp.GetResponseVersion() != held.GetResponseVersion() {
		t.Fatalf("resume sent %v at version %s, want nothing at %s", got, resp.GetResponseVersion(), held.GetResponseVersion())
	}
	// A later change is sent alone, with the version a new proxy gets.
	ch := make(chan cache.Response, 1)
	after.CreateWatch(&cache.Request{TypeUrl: resource.EndpointType, VersionInfo: resp.GetResponseVersion(), ResourceNames: names}, *sub, ch)
	after.update(cla(t, "his", 4), nil)
	changed := <-ch
	if got := sotwNames(t, changed); len(got) != 1 || got[0] != "his" {
		t.Fatalf("change sent %v, want [his]", got)
	}
	fresh, _ := sotwFirst(t, after, "", names)
	if changed.GetResponseVersion() != fresh.GetResponseVersion() {
		t.Fatalf("version after a change %s, a new proxy gets %s", changed.GetResponseVersion(), fresh.GetResponseVersion())
	}
	if other, _ := sotwFirst(t, after, held.GetResponseVersion(), names); len(sotwNames(t, other)) != 2 {
		t.Fatal("a proxy holding the old version was not sent the current assignments")
	}
}

// A delta proxy reconnecting with initial_resource_versions is sent only
// what differs, and nothing at all (not even removals) while a restarted
// control plane has not published yet.
func TestEndpointDeltaResume(t *testing.T) {
	before := newEndpointCache()
	before.update(append(cla(t, "emr", 1), cla(t, "his", 1)...), nil)
	initial := map[string]string{"emr": before.res["emr"].hash, "his": before.res["his"].hash}

	after := newEndpointCache()
	sub := stream.NewDeltaSubscription([]string{"emr", "his"}, nil, initial, true)
	ch := make(chan cache.DeltaResponse, 1)
	req := &cache.DeltaRequest{TypeUrl: resource.EndpointType, ResourceNamesSubscribe: []string{"emr", "his"}, InitialResourceVersions: initial}
	after.CreateDeltaWatch(req, sub, ch)
	if len(ch) != 0 {
		t.Fatal("answered (with removals) before the first publication")
	}
	after.update(append(cla(t, "his", 1), cla(t, "emr", 2)...), nil)
	resp := <-ch
	out, _ := resp.GetDeltaDiscoveryResponse()
	if len(out.GetResources()) != 1 || out.GetResources()[0].GetName() != "emr" || len(out.GetRemovedResources()) != 0 {
		t.Fatalf("resume sent %v, want emr alone", out)
	}

	// Nothing changed at all: nothing sent.
	same := newEndpointCache()
	same.update(append(cla(t, "his", 1), cla(t, "emr", 1)...), nil)
	sub = stream.NewDeltaSubscription([]string{"emr", "his"}, nil, initial, true)
	same.CreateDeltaWatch(req, sub, ch)
	if len(ch) != 0 {
		t.Fatalf("resume with everything held was sent %v", <-ch)
	}
}

// The SotW version kept up to date change by change equals the one
// computed from scratch, whatever the sequence of changes.
func TestEndpointSotWVersionIncremental(t *testing.T) {
	c := newEndpointCache()
	rng := rand.New(rand.NewPCG(1, 2))
	all := []string{"a", "b", "c", "d", "e"}
	for _, n := range all {
		c.update(cla(t, n, 1), nil)
	}
	names := []string{"a", "b", "c", "x"}
	resp, sub := sotwFirst(t, c, "", names)
	version := resp.GetResponseVersion()
	for i := 0; i < 200; i++ {
		ch := make(chan cache.Response, 1)
		c.CreateWatch(&cache.Request{TypeUrl: resource.EndpointType, VersionInfo: version, ResourceNames: names}, *sub, ch)
		n := all[rng.IntN(len(all))]
		switch rng.IntN(3) {
		case 0:
			c.update(nil, []string{n})
		default:
			c.update(cla(t, n, uint32(rng.IntN(3)+1)), nil)
		}
		select {
		case r := <-ch:
			sub.SetReturnedResources(r.GetReturnedResources())
			version = r.GetResponseVersion()
		default:
		}
		var scratch uint64
		for n, v := range sub.ReturnedResources() {
			if n != sotwFoldKey {
				scratch ^= digest(n, v)
			}
		}
		held := sub.ReturnedResources()[sotwFoldKey]
		if held != foldString(scratch) {
			t.Fatalf("step %d: version kept %s, from scratch %s", i, held, foldString(scratch))
		}
		if fresh, _ := sotwFirst(t, c, "", names); got(sub) == len(sotwNames(t, fresh)) && held != fresh.GetResponseVersion() {
			t.Fatalf("step %d: version %s, a new proxy holding the same gets %s", i, held, fresh.GetResponseVersion())
		}
	}
}

// got counts the assignments a SotW subscription holds.
func got(sub *stream.Subscription) int {
	n := 0
	for k := range sub.ReturnedResources() {
		if k != sotwFoldKey {
			n++
		}
	}
	return n
}
