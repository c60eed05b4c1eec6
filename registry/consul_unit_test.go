package registry

import (
	"testing"

	"github.com/hashicorp/consul/api"
)

// Unit tests for the pure parts of the Consul source; the watch itself
// runs against a real Consul agent in the integration tests.

func TestRawFromEntry(t *testing.T) {
	entry := func(addr string, checks ...*api.HealthCheck) *api.ServiceEntry {
		return &api.ServiceEntry{
			Node: &api.Node{Node: "ward-a", Address: "10.9.0.1", Meta: map[string]string{MetaRegion: "north"}},
			Service: &api.AgentService{ID: "emr-1", Service: "emr", Address: addr, Port: 8080,
				Weights: api.AgentWeights{Passing: 10, Warning: 2}, Meta: map[string]string{MetaKind: "emr"}},
			Checks: checks,
		}
	}
	check := func(id, status string) *api.HealthCheck { return &api.HealthCheck{CheckID: id, Status: status} }
	tests := []struct {
		name       string
		e          *api.ServiceEntry
		wantAddr   string
		wantHealth Health
		wantWeight int
	}{
		{"passing", entry("10.1.0.11", check("http", "passing")), "10.1.0.11", HealthPassing, 10},
		{"no checks counts as passing", entry("10.1.0.11"), "10.1.0.11", HealthPassing, 10},
		// Service address unset: Consul means "the node's address".
		{"node address fallback", entry("", check("http", "passing")), "10.9.0.1", HealthPassing, 10},
		{"warning uses the warning weight", entry("10.1.0.11", check("http", "passing"), check("disk", "warning")), "10.1.0.11", HealthWarning, 2},
		{"critical", entry("10.1.0.11", check("http", "critical"), check("disk", "passing")), "10.1.0.11", HealthCritical, 10},
		// An instance in maintenance must not receive traffic.
		{"node maintenance is critical", entry("10.1.0.11", check("http", "passing"), check(api.NodeMaint, "critical")), "10.1.0.11", HealthCritical, 10},
		{"service maintenance is critical", entry("10.1.0.11", check(api.ServiceMaintPrefix+"emr-1", "critical")), "10.1.0.11", HealthCritical, 10},
		{"unknown status is critical", entry("10.1.0.11", check("http", "bogus")), "10.1.0.11", HealthCritical, 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := rawFromEntry(tt.e)
			if r.Address != tt.wantAddr || r.Health != tt.wantHealth || r.Weight != tt.wantWeight {
				t.Errorf("address %q health %q weight %d, want %q %q %d", r.Address, r.Health, r.Weight, tt.wantAddr, tt.wantHealth, tt.wantWeight)
			}
			if r.ServiceName != "emr" || r.ID != "emr-1" || r.Node != "ward-a" || r.Port != 8080 ||
				r.ServiceMeta[MetaKind] != "emr" || r.NodeMeta[MetaRegion] != "north" {
				t.Errorf("raw instance %+v", r)
			}
		})
	}
}

func TestNextIndex(t *testing.T) {
	tests := []struct {
		prev, got, want uint64
	}{
		{0, 5, 5},
		{5, 9, 9},
		{9, 9, 9}, // timeout without change
		{9, 3, 0}, // went backwards: agent restarted, start over
		{9, 0, 0}, // never wait on index 0
		{0, 0, 0},
	}
	for _, tt := range tests {
		if got := nextIndex(tt.prev, tt.got); got != tt.want {
			t.Errorf("nextIndex(%d, %d) = %d, want %d", tt.prev, tt.got, got, tt.want)
		}
	}
}

func TestCheckFingerprints(t *testing.T) {
	checks := []*api.HealthCheck{
		{Node: "n1", CheckID: "serfHealth", Status: "passing", ModifyIndex: 3},
		{Node: "n1", CheckID: "ttl-emr-1", ServiceName: "emr", Status: "passing", ModifyIndex: 5},
		{Node: "n2", CheckID: "ttl-emr-2", ServiceName: "emr", Status: "passing", ModifyIndex: 6},
		{Node: "n2", CheckID: "ttl-his-1", ServiceName: "his", Status: "passing", ModifyIndex: 7},
	}
	svc, nodes := checkFingerprints(checks)
	if len(svc) != 2 || len(nodes) != 1 || nodes["n1"] == "" {
		t.Fatalf("services %v nodes %v", svc, nodes)
	}
	// Order does not matter; a status change of one instance changes only
	// its service's fingerprint.
	reordered := []*api.HealthCheck{checks[2], checks[0], checks[3], checks[1]}
	svc2, _ := checkFingerprints(reordered)
	if svc2["emr"] != svc["emr"] {
		t.Errorf("fingerprint depends on order: %q vs %q", svc2["emr"], svc["emr"])
	}
	changed := *checks[2]
	changed.Status, changed.ModifyIndex = "critical", 9
	svc3, _ := checkFingerprints([]*api.HealthCheck{checks[0], checks[1], &changed, checks[3]})
	if svc3["emr"] == svc["emr"] || svc3["his"] != svc["his"] {
		t.Errorf("emr %q->%q his %q->%q", svc["emr"], svc3["emr"], svc["his"], svc3["his"])
	}
}

// A checks answer in which only statuses moved refreshes a service's
// health exactly as a read of its health endpoint would; any registration
// or removal of an instance or a check sends it back to a read.
func TestRefreshHealth(t *testing.T) {
	w := api.AgentWeights{Passing: 10, Warning: 2}
	chk := func(node, svcID, id, status string) *api.HealthCheck {
		return &api.HealthCheck{Node: node, ServiceID: svcID, ServiceName: "emr", CheckID: id, Status: status}
	}
	read := []fetchedInstance{
		{raw: RawInstance{ServiceName: "emr", ID: "emr-1", Node: "a", Health: HealthPassing, Weight: 10}, weights: w, checks: "http"},
		{raw: RawInstance{ServiceName: "emr", ID: "emr-2", Node: "b", Health: HealthPassing, Weight: 10}, weights: w, checks: ""},
	}
	serf := &api.HealthCheck{Node: "b", CheckID: "serfHealth", Status: "passing"}
	got, ok := refreshHealth("emr", read, indexChecks([]*api.HealthCheck{chk("a", "emr-1", "http", "warning"), serf}, nil, nil))
	if !ok || got[0].Health != HealthWarning || got[0].Weight != 2 || got[1].Health != HealthPassing {
		t.Fatalf("status change: %v %+v", ok, got)
	}
	serf.Status = "critical"
	got, ok = refreshHealth("emr", read, indexChecks([]*api.HealthCheck{chk("a", "emr-1", "http", "passing"), serf}, map[string]bool{"emr": true}, map[string][]RawInstance{"emr": {read[0].raw, read[1].raw}}))
	if !ok || got[1].Health != HealthCritical || got[0].Health != HealthPassing {
		t.Fatalf("node check: %v %+v", ok, got)
	}
	for name, checks := range map[string][]*api.HealthCheck{
		"check removed":        nil,
		"check added":          {chk("a", "emr-1", "http", "passing"), chk("b", "emr-2", "tcp", "passing")},
		"instance not read":    {chk("a", "emr-1", "http", "passing"), chk("c", "emr-3", "http", "passing")},
		"instance maintenance": {chk("a", "emr-1", "http", "passing"), chk("a", "emr-1", api.ServiceMaintPrefix+"emr-1", "critical")},
	} {
		if _, ok := refreshHealth("emr", read, indexChecks(checks, nil, nil)); ok {
			t.Errorf("%s: refreshed instead of read again", name)
		}
	}
}
