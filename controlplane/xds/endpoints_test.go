package xds

import (
	"testing"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/stream/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func cla(t *testing.T, name string, weight uint32) []Hashed {
	t.Helper()
	return hashed(t, &endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpointv3.LocalityLbEndpoints{{
		LoadBalancingWeight: wrapperspb.UInt32(weight),
	}}})
}

func sotwNames(t *testing.T, r cache.Response) []string {
	t.Helper()
	out, err := r.GetDiscoveryResponse()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, a := range out.GetResources() {
		m := &endpointv3.ClusterLoadAssignment{}
		if err := a.UnmarshalTo(m); err != nil {
			t.Fatal(err)
		}
		names = append(names, m.GetClusterName())
	}
	return names
}

// The SotW protocol as go-control-plane's server drives it: answer the
// first request, park acknowledgements, wake only for subscribed changes
// and send only what changed.
func TestEndpointCacheSotW(t *testing.T) {
	c := newEndpointCache()
	if err := c.update(append(cla(t, "emr", 1), cla(t, "his", 1)...), nil); err != nil {
		t.Fatal(err)
	}
	sub := stream.NewSotwSubscription([]string{"emr", "imaging"}, true)
	ch := make(chan cache.Response, 1)
	req := &cache.Request{TypeUrl: resource.EndpointType, ResourceNames: []string{"emr", "imaging"}}
	if _, err := c.CreateWatch(req, sub, ch); err != nil {
		t.Fatal(err)
	}
	resp := <-ch
	if got := sotwNames(t, resp); len(got) != 1 || got[0] != "emr" {
		t.Fatalf("first response = %v, want [emr]", got)
	}
	sub.SetReturnedResources(resp.GetReturnedResources())

	// The ACK carries our version: nothing new, so the watch is parked.
	ack := &cache.Request{TypeUrl: resource.EndpointType, VersionInfo: resp.GetResponseVersion(), ResourceNames: req.ResourceNames}
	cancel, _ := c.CreateWatch(ack, sub, ch)
	if len(ch) != 0 || len(c.sotw) != 1 {
		t.Fatalf("ACK answered at once (%d) or not parked (%d)", len(ch), len(c.sotw))
	}
	// A change to an unsubscribed assignment, or an unchanged one, wakes nobody.
	c.update(cla(t, "his", 2), nil)
	c.update(cla(t, "emr", 1), nil)
	if len(ch) != 0 {
		t.Fatal("woken by a change it does not subscribe to")
	}
	// A new subscribed assignment is sent alone.
	c.update(cla(t, "imaging", 1), nil)
	resp = <-ch
	if got := sotwNames(t, resp); len(got) != 1 || got[0] != "imaging" {
		t.Fatalf("update = %v, want [imaging]", got)
	}
	if v := resp.GetReturnedResources(); len(v) != 3 || v["emr"] == "" || v["imaging"] == "" || v[sotwFoldKey] != resp.GetResponseVersion() {
		t.Fatalf("returned versions = %v, want emr and imaging with the response version", v)
	}
	if len(c.sotw) != 0 {
		t.Fatal("answered watch still parked")
	}
	cancel()

	// A reconnect (a new stream) with a version it does not hold the
	// current content of is sent everything it subscribes to.
	other := &cache.Request{TypeUrl: resource.EndpointType, VersionInfo: "q-7", ResourceNames: req.ResourceNames}
	c.CreateWatch(other, stream.NewSotwSubscription(req.ResourceNames, true), ch)
	if resp := <-ch; len(sotwNames(t, resp)) != 2 {
		t.Fatalf("stale version answered with %v, want both assignments", sotwNames(t, resp))
	}
}

func TestEndpointCacheDeltaRemoval(t *testing.T) {
	c := newEndpointCache()
	c.update(append(cla(t, "emr", 1), cla(t, "his", 1)...), nil)
	sub := stream.NewDeltaSubscription(nil, nil, nil, true) // wildcard
	ch := make(chan cache.DeltaResponse, 1)
	req := &cache.DeltaRequest{TypeUrl: resource.EndpointType}
	c.CreateDeltaWatch(req, sub, ch)
	resp := <-ch
	out, _ := resp.GetDeltaDiscoveryResponse()
	if len(out.GetResources()) != 2 {
		t.Fatalf("first delta response has %d resources, want 2", len(out.GetResources()))
	}
	sub.SetReturnedResources(resp.GetNextVersionMap())
	ack := &cache.DeltaRequest{TypeUrl: resource.EndpointType, ResponseNonce: "1"}
	c.CreateDeltaWatch(ack, sub, ch)
	if len(ch) != 0 {
		t.Fatal("ACK answered although nothing changed")
	}
	c.update(nil, []string{"his"})
	resp = <-ch
	out, _ = resp.GetDeltaDiscoveryResponse()
	if len(out.GetResources()) != 0 || len(out.GetRemovedResources()) != 1 || out.GetRemovedResources()[0] != "his" {
		t.Fatalf("removal response = %v", out)
	}
	if _, ok := resp.GetNextVersionMap()["his"]; ok {
		t.Fatal("removed resource still in the version map")
	}
}
