package policy_test

import (
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"medmesh/api/v1alpha1"
	"medmesh/controlplane/ir"
	"medmesh/controlplane/policy"
	"medmesh/registry"
)

const catalogYAML = `
services:
- name: emr
  kind: emr
  instances:
  - {id: emr-1, address: 10.0.0.1, port: 8080, meta: {version: v1}}
  - {id: emr-2, address: 10.0.0.2, port: 8080, meta: {version: v2}}
- name: his
  kind: his
  instances:
  - {id: his-1, address: 10.0.0.3, port: 8080}
- name: labs
  phi: false
  instances:
  - {id: labs-1, address: 10.0.0.4, port: 8080}
- name: hl7
  protocol: tcp
  instances:
  - {id: hl7-1, address: 10.0.0.5, port: 2575}
`

func testCatalog(t *testing.T) *registry.Catalog {
	t.Helper()
	cat, err := registry.ParseCatalogFile("catalog.yaml", []byte(catalogYAML))
	if err != nil {
		t.Fatal(err)
	}
	return cat
}

var now = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func resolve(t *testing.T, docs string) *policy.Result {
	t.Helper()
	set, err := policy.ParseSet("test.yaml", []byte(docs))
	if err != nil {
		t.Fatal(err)
	}
	return policy.Resolve(set, policy.Options{Catalog: testCatalog(t), Defaults: ir.DefaultDefaults(), Now: now})
}

func status(t *testing.T, res *policy.Result, kind, name string) policy.ObjectStatus {
	t.Helper()
	for _, s := range res.Statuses {
		if s.Kind == kind && s.Name == name {
			return s
		}
	}
	t.Fatalf("no status for %s %s in %+v", kind, name, res.Statuses)
	return policy.ObjectStatus{}
}

func condition(s policy.ObjectStatus, typ string) *metav1.Condition {
	for i := range s.Conditions {
		if s.Conditions[i].Type == typ {
			return &s.Conditions[i]
		}
	}
	return nil
}

func route(name, spec string) string {
	return "---\napiVersion: policy.medmesh.io/v1alpha1\nkind: MeshRoute\nmetadata: {name: " + name + "}\nspec:\n" + spec + "\n"
}

// TestInvalidObjectsNameTheField: each kind of bad input is refused with
// a reason naming the object and the field, and affects nothing, while a
// valid object beside it is accepted and applied.
func TestInvalidObjectsNameTheField(t *testing.T) {
	cases := []struct {
		name, spec, reason, field string
	}{
		{"negative-timeout", "  service: his\n  rules:\n  - destinations: [{}]\n    timeout: -5s",
			v1alpha1.ReasonInvalid, "spec.rules[0].timeout"},
		{"zero-weights", "  service: his\n  rules:\n  - destinations: [{weight: 0}, {subset: {version: v2}, weight: 0}]",
			v1alpha1.ReasonInvalid, "spec.rules[0].destinations"},
		{"bad-regex", "  service: his\n  rules:\n  - match: {path: {type: RegularExpression, value: '(a'}}\n    destinations: [{}]",
			v1alpha1.ReasonInvalid, "spec.rules[0].match.path.value"},
		{"bad-header-regex", "  service: his\n  rules:\n  - match: {headers: [{name: x-a, type: RegularExpression, value: '[z-a]'}]}\n    destinations: [{}]",
			v1alpha1.ReasonInvalid, "spec.rules[0].match.headers[0].value"},
		{"unknown-service", "  service: pharmacy\n  rules:\n  - destinations: [{}]",
			v1alpha1.ReasonServiceNotFound, "spec.service"},
		{"unknown-destination", "  service: his\n  rules:\n  - destinations: [{service: pharmacy}]",
			v1alpha1.ReasonServiceNotFound, "spec.rules[0].destinations[0].service"},
		{"unknown-subset", "  service: his\n  rules:\n  - destinations: [{service: emr, subset: {version: v9}}]",
			v1alpha1.ReasonSubsetNotFound, "spec.rules[0].destinations[0].subset"},
		{"unknown-mirror-subset", "  service: his\n  rules:\n  - destinations: [{}]\n    mirror: {service: emr, subset: {version: v9}}",
			v1alpha1.ReasonSubsetNotFound, "spec.rules[0].mirror.subset"},
		{"tcp-service", "  service: hl7\n  rules:\n  - destinations: [{}]",
			v1alpha1.ReasonInvalid, "spec.service"},
		{"relative-path", "  service: his\n  rules:\n  - match: {path: {value: fhir}}\n    destinations: [{}]",
			v1alpha1.ReasonInvalid, "spec.rules[0].match.path.value"},
		{"too-many-retries", "  service: his\n  rules:\n  - destinations: [{}]\n    retries: {attempts: 11}",
			v1alpha1.ReasonInvalid, "spec.rules[0].retries.attempts"},
		{"abort-without-status", "  service: his\n  rules:\n  - destinations: [{}]\n    fault: {abort: {percent: 10}}",
			v1alpha1.ReasonInvalid, "spec.rules[0].fault.abort"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res := resolve(t, route(c.name, c.spec)+route("good", "  service: emr\n  rules:\n  - destinations: [{subset: {version: v2}}]"))
			st := status(t, res, v1alpha1.KindMeshRoute, c.name)
			if st.Accepted() {
				t.Fatalf("accepted: %+v", st.Conditions)
			}
			acc, inv := condition(st, v1alpha1.ConditionAccepted), condition(st, v1alpha1.ConditionInvalid)
			if acc.Reason != c.reason || inv == nil || inv.Status != metav1.ConditionTrue {
				t.Fatalf("conditions %+v: want Accepted=False reason %s and Invalid=True", st.Conditions, c.reason)
			}
			for _, want := range []string{"MeshRoute default/" + c.name, c.field} {
				if !strings.Contains(acc.Message, want) {
					t.Errorf("message %q does not name %q", acc.Message, want)
				}
			}
			if len(res.Policies.Routes) != 1 || res.Policies.Routes[0].Service != "emr" {
				t.Fatalf("applied routes %+v: want only the valid one (emr)", res.Policies.Routes)
			}
			if !status(t, res, v1alpha1.KindMeshRoute, "good").Accepted() {
				t.Fatal("the valid route beside the invalid one is not accepted")
			}
		})
	}
}

// TestConflictOldestWins: two routes for one service; the older by
// creationTimestamp wins whatever the order they are listed in, ties go
// to the name, the loser says who won, and an invalid older object does
// not block a valid newer one.
func TestConflictOldestWins(t *testing.T) {
	mk := func(name, created, subset string) string {
		return "---\napiVersion: policy.medmesh.io/v1alpha1\nkind: MeshRoute\nmetadata: {name: " + name +
			", creationTimestamp: \"" + created + "\"}\nspec:\n  service: emr\n  rules:\n  - destinations: [{subset: {version: " + subset + "}}]\n"
	}
	for _, order := range [][]string{{"a", "b"}, {"b", "a"}} {
		docs := map[string]string{
			"a": mk("zz-old", "2025-01-01T00:00:00Z", "v1"),
			"b": mk("aa-new", "2025-02-01T00:00:00Z", "v2"),
		}
		res := resolve(t, docs[order[0]]+docs[order[1]])
		if !status(t, res, v1alpha1.KindMeshRoute, "zz-old").Accepted() {
			t.Fatal("older route not accepted")
		}
		lost := status(t, res, v1alpha1.KindMeshRoute, "aa-new")
		acc := condition(lost, v1alpha1.ConditionAccepted)
		if lost.Accepted() || acc.Reason != v1alpha1.ReasonConflicted || !strings.Contains(acc.Message, "zz-old") {
			t.Fatalf("newer route: %+v; want Conflicted naming zz-old", lost.Conditions)
		}
		if inv := condition(lost, v1alpha1.ConditionInvalid); inv.Status != metav1.ConditionFalse {
			t.Fatalf("a conflicted route is valid: %+v", inv)
		}
		if len(res.Policies.Routes) != 1 || res.Policies.Routes[0].Rules[0].Destinations[0].Subset["version"] != "v1" {
			t.Fatalf("applied %+v: want the older route only", res.Policies.Routes)
		}
	}
	// Same timestamp: the name decides.
	res := resolve(t, mk("b-route", "2025-01-01T00:00:00Z", "v2")+mk("a-route", "2025-01-01T00:00:00Z", "v1"))
	if !status(t, res, v1alpha1.KindMeshRoute, "a-route").Accepted() || status(t, res, v1alpha1.KindMeshRoute, "b-route").Accepted() {
		t.Fatal("tie not broken by name")
	}
	// An invalid older route does not hold the service.
	bad := "---\napiVersion: policy.medmesh.io/v1alpha1\nkind: MeshRoute\nmetadata: {name: old-bad, creationTimestamp: \"2024-01-01T00:00:00Z\"}\nspec:\n  service: emr\n  rules:\n  - destinations: [{}]\n    timeout: -1s\n"
	res = resolve(t, bad+mk("new-good", "2025-01-01T00:00:00Z", "v2"))
	if !status(t, res, v1alpha1.KindMeshRoute, "new-good").Accepted() {
		t.Fatal("valid route blocked by an older invalid one")
	}
}

// TestDestinationAndAccessValidation covers the other two kinds.
func TestDestinationAndAccessValidation(t *testing.T) {
	docs := `
apiVersion: policy.medmesh.io/v1alpha1
kind: MeshDestination
metadata: {name: emr-permissive}
spec:
  service: emr
  tls: {mode: Permissive}
---
apiVersion: policy.medmesh.io/v1alpha1
kind: MeshDestination
metadata: {name: labs-ring}
spec:
  service: labs
  loadBalancer: {algorithm: RingHash, minRingSize: 4096, maxRingSize: 1024}
---
apiVersion: policy.medmesh.io/v1alpha1
kind: MeshDestination
metadata: {name: his-ok}
spec:
  service: his
  loadBalancer: {algorithm: LeastRequest, choiceCount: 3}
  circuitBreaker: {maxRequests: 10}
  outlierDetection: {consecutive5xx: 2}
  localityFailover: [{site: hub}, {site: north}, {region: south, zone: south-a}]
---
apiVersion: policy.medmesh.io/v1alpha1
kind: MeshDestination
metadata: {name: emr-failover-empty}
spec:
  service: emr
  localityFailover: [{site: hub}, {}]
---
apiVersion: policy.medmesh.io/v1alpha1
kind: MeshDestination
metadata: {name: emr-failover-zone}
spec:
  service: emr
  localityFailover: [{site: hub, zone: hub-a}]
---
apiVersion: policy.medmesh.io/v1alpha1
kind: MeshAccess
metadata: {name: tcp-paths}
spec:
  service: hl7
  action: Allow
  from: [{service: his}]
  to: [{paths: [/x]}]
---
apiVersion: policy.medmesh.io/v1alpha1
kind: MeshAccess
metadata: {name: both-caller-kinds}
spec:
  service: emr
  action: Deny
  from: [{service: his, spiffeID: "spiffe://medmesh.local/ns/default/svc/his"}]
---
apiVersion: policy.medmesh.io/v1alpha1
kind: MeshAccess
metadata: {name: his-reads}
spec:
  service: emr
  action: Allow
  from: [{service: his}, {service: not-registered-yet}]
  to: [{paths: [/fhir/*], methods: [GET]}]
`
	res := resolve(t, docs)
	for _, c := range []struct{ kind, name, field string }{
		{v1alpha1.KindMeshDestination, "emr-permissive", "spec.tls.mode"},
		{v1alpha1.KindMeshDestination, "labs-ring", "spec.loadBalancer.minRingSize"},
		{v1alpha1.KindMeshDestination, "emr-failover-empty", "spec.localityFailover[1]: Required value: a region or a site is required"},
		{v1alpha1.KindMeshDestination, "emr-failover-zone", "spec.localityFailover[0].zone: Forbidden: zone needs a region"},
		{v1alpha1.KindMeshAccess, "tcp-paths", "spec.service"},
		{v1alpha1.KindMeshAccess, "both-caller-kinds", "spec.from[0]"},
	} {
		st := status(t, res, c.kind, c.name)
		if st.Accepted() || !strings.Contains(st.Message(), c.field) {
			t.Errorf("%s %s: %q; want not accepted, naming %s", c.kind, c.name, st.Message(), c.field)
		}
	}
	for _, c := range []struct{ kind, name string }{{v1alpha1.KindMeshDestination, "his-ok"}, {v1alpha1.KindMeshAccess, "his-reads"}} {
		if st := status(t, res, c.kind, c.name); !st.Accepted() {
			t.Errorf("%s %s not accepted: %s", c.kind, c.name, st.Message())
		}
	}
	d := res.Policies.Destinations
	if len(d) != 1 || d[0].Service != "his" || d[0].LB.ChoiceCount != 3 || d[0].CircuitBreaker.MaxRequests != 10 ||
		d[0].CircuitBreaker.MaxConnections != ir.DefaultDefaults().CircuitBreaker.MaxConnections || d[0].Outlier.Consecutive5xx != 2 {
		t.Fatalf("destinations %+v: want his with its settings over the defaults", d)
	}
	if f := d[0].Failover; len(f) != 3 || f[0] != (ir.Locality{Site: "hub"}) || f[1] != (ir.Locality{Site: "north"}) ||
		f[2] != (ir.Locality{Region: "south", Zone: "south-a"}) {
		t.Fatalf("failover %+v: want the site-only entries and the region one, in order", f)
	}
}

// TestConditionTimesKept: re-resolving an unchanged object keeps its
// LastTransitionTime; a change of standing moves it.
func TestConditionTimesKept(t *testing.T) {
	cat := testCatalog(t)
	good, _ := policy.ParseSet("a.yaml", []byte(route("r", "  service: emr\n  rules:\n  - destinations: [{}]")))
	first := policy.Resolve(good, policy.Options{Catalog: cat, Now: now})
	later := now.Add(time.Hour)
	again := policy.Resolve(good, policy.Options{Catalog: cat, Now: later, Previous: first.Statuses})
	if got := condition(again.Statuses[0], v1alpha1.ConditionAccepted).LastTransitionTime.Time; !got.Equal(now) {
		t.Fatalf("unchanged object's transition time moved to %v", got)
	}
	// The service disappears from the catalog: the object is no longer
	// accepted, and says so from now on.
	empty := &registry.Catalog{}
	gone := policy.Resolve(good, policy.Options{Catalog: empty, Now: later, Previous: again.Statuses})
	acc := condition(gone.Statuses[0], v1alpha1.ConditionAccepted)
	if acc.Status != metav1.ConditionFalse || acc.Reason != v1alpha1.ReasonServiceNotFound || !acc.LastTransitionTime.Time.Equal(later) {
		t.Fatalf("after the service left: %+v", acc)
	}
}
