package ir

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"medmesh/registry"
)

// scopeMesh: PHI emr and his, non-PHI labs and billing, an L7-only
// caller, a wildcard, a denial and a MeshAccess allow and deny.
func scopeMesh(t *testing.T, mtls bool, intentions []registry.Intention, pol *Policies, explicit ...string) *Mesh {
	t.Helper()
	cat := catalog(t,
		svc("emr", registry.KindEMR, registry.ProtocolHTTP, registry.LBRoundRobin, inst("emr-1", 8080, registry.HealthPassing, registry.Locality{})),
		svc("his", registry.KindHIS, registry.ProtocolHTTP, registry.LBRoundRobin, inst("his-1", 8081, registry.HealthPassing, registry.Locality{})),
		svc("imaging", registry.KindImaging, registry.ProtocolHTTP, registry.LBRoundRobin, inst("imaging-1", 8082, registry.HealthPassing, registry.Locality{})),
		svc("labs", registry.KindGeneric, registry.ProtocolHTTP, registry.LBRoundRobin, inst("labs-1", 8083, registry.HealthPassing, registry.Locality{})),
		svc("billing", registry.KindGeneric, registry.ProtocolHTTP, registry.LBRoundRobin, inst("billing-1", 8084, registry.HealthPassing, registry.Locality{})),
		svc("nurse", registry.KindGeneric, registry.ProtocolHTTP, registry.LBRoundRobin, inst("nurse-1", 8085, registry.HealthPassing, registry.Locality{})),
	)
	for i := range cat.Services {
		if slices.Contains(explicit, cat.Services[i].Name) {
			cat.Services[i].ExplicitScope = true
		}
	}
	cat.Intentions = intentions
	return Build(Inputs{Catalog: cat, Policies: pol, Defaults: DefaultDefaults(), TrustDomain: "medmesh.local", MTLS: mtls})
}

func TestScopeFollowsAuthorization(t *testing.T) {
	intentions := []registry.Intention{
		{Source: "nurse", Destination: "emr", Allow: true},
		{Source: "nurse", Destination: "billing", Allow: false},
		{Source: "*", Destination: "imaging", Allow: true},
		{Source: "labs", Destination: "imaging", Allow: false},
		{Source: "billing", Destination: "his", Permissions: []registry.IntentionPermission{{Allow: true, PathPrefix: "/fhir/", Methods: []string{"GET"}}}},
	}
	pol := &Policies{
		Access: []AccessPolicy{
			{Name: "default/labs-his", Service: "his", Allow: true, Services: []string{"labs"}, To: []Operation{{Methods: []string{"GET"}}}},
			{Name: "default/no-labs", Service: "emr", Allow: false, Services: []string{"labs"}},
		},
		Routes: []RoutePolicy{{Service: "labs", Rules: []RoutePolicyRule{{Name: "archive",
			Destinations: []Destination{{Service: "emr", Weight: 1}}}}}},
	}
	m := scopeMesh(t, true, intentions, pol, "billing")
	tests := []struct {
		caller string
		want   []string
	}{
		// emr by intention, imaging by the wildcard, labs and itself by
		// default; billing denied by name, his is PHI with no allow.
		{"nurse", []string{"emr", "imaging", "labs", "nurse"}},
		// his by MeshAccess (some calls); imaging denied by name; emr
		// denied by MeshAccess, though labs's own route sends to it: the
		// route's target is sent (the callee's RBAC still refuses).
		{"labs", []string{"billing", "emr", "his", "labs", "nurse"}},
		// explicit: only what names billing (his's L7 intention); the
		// wildcard on imaging and the default-allow services are dropped.
		{"billing", []string{"his"}},
		// an unregistered client is a caller like any other; emr comes
		// with labs, whose route sends to it
		{"kiosk", []string{"billing", "emr", "imaging", "labs", "nurse"}},
	}
	for _, tt := range tests {
		if got := m.Scope(tt.caller); !slices.Equal(got, tt.want) {
			t.Errorf("Scope(%q) = %v, want %v", tt.caller, got, tt.want)
		}
	}
	ex := m.ExplainScope("labs")
	reasons := map[string]string{}
	for _, e := range append(ex.Included, ex.Excluded...) {
		reasons[e.Service] = e.Reason
	}
	for svc, want := range map[string]string{
		"his":     `MeshAccess "default/labs-his" allows it`,
		"imaging": "an intention denies it",
		"emr":     `referenced by the routes of "labs"`,
		"billing": "default-allow: not PHI",
	} {
		if !strings.Contains(reasons[svc], want) {
			t.Errorf("labs -> %s: reason %q, want it to say %q", svc, reasons[svc], want)
		}
	}
	if r := m.ExplainScope("nurse"); !strings.Contains(fmt.Sprint(r.Excluded), "PHI default-deny") {
		t.Errorf("nurse's excluded services do not name PHI default-deny: %v", r.Excluded)
	}
	if r := m.ExplainScope("billing"); !r.Explicit || !strings.Contains(fmt.Sprint(r.Excluded), "medmesh-scope=explicit") {
		t.Errorf("billing's narrowing is not explained: %+v", r)
	}
}

// Scope (the indexed fast path) and ExplainScope (every service decided
// one by one) must agree for every caller, whatever the authorization.
func TestScopeAgreesWithExplain(t *testing.T) {
	variants := [][]registry.Intention{
		nil,
		{{Source: "*", Destination: "emr", Allow: true}, {Source: "*", Destination: "labs", Allow: false}},
		{{Source: "nurse", Destination: "his", Allow: true}, {Source: "his", Destination: "labs", Allow: false}},
	}
	for vi, in := range variants {
		for _, mtls := range []bool{true, false} {
			m := scopeMesh(t, mtls, in, nil, "nurse")
			for _, caller := range []string{"emr", "his", "imaging", "labs", "billing", "nurse", "unknown"} {
				var names []string
				for _, e := range m.ExplainScope(caller).Included {
					names = append(names, e.Service)
				}
				if got := m.Scope(caller); !slices.Equal(got, names) {
					t.Errorf("variant %d mtls=%t caller %s: Scope %v, ExplainScope %v", vi, mtls, caller, got, names)
				}
			}
		}
	}
}

// With mTLS off no callee enforces anything: every service is in scope.
func TestScopeWithoutMTLS(t *testing.T) {
	m := scopeMesh(t, false, nil, nil)
	if got := m.Scope("nurse"); len(got) != len(m.Services) {
		t.Errorf("mTLS off: scope %v, want every service", got)
	}
}
