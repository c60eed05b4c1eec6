package residency

import (
	"fmt"
	"strings"
	"testing"
)

// siteFlows are the flows of n local services at site-a calling n
// services at each of the given sites, every second one PHI.
func siteFlows(n int, sites ...string) []Flow {
	var out []Flow
	for i := range n {
		for _, site := range sites {
			for j := range n {
				out = append(out, Flow{
					Source:      Source{Service: fmt.Sprintf("s%d", i), Namespace: "default", Site: "site-a"},
					Destination: Destination{Service: fmt.Sprintf("s%d", j), Namespace: "default", Site: site, PHI: j%2 == 0, Kind: "emr"},
				})
			}
		}
	}
	return out
}

// An unchanged input is not evaluated again; a changed one is, once.
func TestDeciderMemo(t *testing.T) {
	d := NewDecider(nil)
	flows := siteFlows(4, "site-a", "hub")
	first := d.Decide(flows)
	if s := d.Stats(); s.Evaluations != uint64(len(flows)) || s.Hits != 0 || s.MemoEntries != len(flows) || s.Policy != DefaultName {
		t.Fatalf("first call: %+v", s)
	}
	for i, f := range flows {
		local := f.Destination.Site == f.Source.Site
		if want := local || !f.Destination.PHI; first[i].Allowed != want {
			t.Errorf("%+v: allowed %v", f, first[i].Allowed)
		}
	}

	again := d.Decide(flows)
	if s := d.Stats(); s.Evaluations != uint64(len(flows)) || s.Hits != uint64(len(flows)) {
		t.Fatalf("second call evaluated again: %+v", s)
	}
	for i := range again {
		if again[i].Allowed != first[i].Allowed {
			t.Errorf("flow %d: memo answered %v, first %v", i, again[i].Allowed, first[i].Allowed)
		}
	}

	// One remote service turns PHI: only the flows to it are evaluated.
	changed := append([]Flow(nil), flows...)
	n := 0
	for i := range changed {
		if c := &changed[i].Destination; c.Site == "hub" && c.Service == "s1" {
			c.PHI = true
			n++
		}
	}
	before := d.Stats().Evaluations
	out := d.Decide(changed)
	if got := d.Stats().Evaluations - before; got != uint64(n) {
		t.Errorf("evaluated %d flows after one service changed, want %d", got, n)
	}
	for i, f := range changed {
		if f.Destination.Site == "hub" && f.Destination.Service == "s1" && out[i].Allowed {
			t.Errorf("%+v: allowed after turning PHI", f)
		}
	}
}

func TestDeciderSetPolicy(t *testing.T) {
	d := NewDecider(nil)
	f := []Flow{flow("site-a", "hub", true, "imaging")}
	if d.Decide(f)[0].Allowed {
		t.Fatal("default allowed PHI imaging to the hub")
	}
	if d.SetPolicy(Default()) {
		t.Error("the same source again counted as a change")
	}
	if d.Stats().MemoEntries != 1 {
		t.Error("an unchanged policy dropped the memo")
	}
	if !d.SetPolicy(mustParse(t, "imaging.rego", imagingToHub)) {
		t.Error("a new policy was not a change")
	}
	if s := d.Stats(); s.MemoEntries != 0 || s.Policy != "imaging.rego" {
		t.Errorf("after the change: %+v", s)
	}
	if dec := d.Decide(f)[0]; !dec.Allowed {
		t.Errorf("a decision of the old policy survived the change: %+v", dec)
	}
	if d.Policy().Name() != "imaging.rego" {
		t.Errorf("policy in force %q", d.Policy().Name())
	}
}

// Through Decide, a failing policy denies and is counted; a deny that is
// always false allows.
func TestDeciderFailsClosed(t *testing.T) {
	d := NewDecider(mustParse(t, "rt.rego", "package medmesh.residency\n\ndeny if to_number(input.destination.site) > 0\n"))
	out := d.Decide([]Flow{flow("site-a", "hub", false, "generic")})
	if out[0].Allowed || !strings.Contains(out[0].Reasons[0], "rt.rego:3") {
		t.Errorf("decision %+v, want denied naming rt.rego:3", out[0])
	}
	if s := d.Stats(); s.Failures != 1 {
		t.Errorf("failures %d, want 1", s.Failures)
	}
	d.SetPolicy(mustParse(t, "open.rego", "package medmesh.residency\n\ndeny if false\n"))
	if out := d.Decide([]Flow{flow("site-a", "hub", true, "emr")}); !out[0].Allowed {
		t.Errorf("deny if false denied: %+v", out[0])
	}
}

// Inputs the recent calls no longer ask for are dropped once the memo
// outgrows the calls, so a long-lived site's memo stays bounded.
func TestDeciderMemoBounded(t *testing.T) {
	d := NewDecider(nil)
	for round := range 5 {
		flows := make([]Flow, minMemo)
		for i := range flows {
			flows[i] = flow("site-a", fmt.Sprintf("site-%d-%d", round, i), true, "emr")
		}
		d.Decide(flows)
		if n := d.Stats().MemoEntries; n > 2*minMemo {
			t.Fatalf("round %d: %d memo entries", round, n)
		}
	}
}
