package wire_test

import (
	"strings"
	"testing"

	"medmesh/api/wire"
)

func TestSiteServiceIDForms(t *testing.T) {
	if got := wire.SiteServiceID("medmesh.local", "default", "emr", ""); got != "spiffe://medmesh.local/ns/default/svc/emr" ||
		got != wire.ServiceID("medmesh.local", "default", "emr") {
		t.Errorf("no site: %s, want today's form", got)
	}
	if got := wire.SiteServiceID("medmesh.local", "icu", "vitals", "site-a"); got != "spiffe://medmesh.local/ns/icu/svc/vitals/site/site-a" {
		t.Errorf("site: %s", got)
	}
}

// Both forms round-trip, so a callee reads back exactly what the caller's
// control plane wrote.
func TestParseServiceIDRoundTrips(t *testing.T) {
	for _, tc := range []struct{ td, ns, svc, site string }{
		{"medmesh.local", "default", "emr", ""},
		{"medmesh.local", "default", "emr", "site-a"},
		{"hospital.example.org", "icu", "vitals_v2", "b"},
		{"td", "ns.with.dots", "Svc-1", strings.Repeat("x", 63)},
		{"td", "site", "site", "site"}, // the keywords are fine as names
	} {
		id := wire.SiteServiceID(tc.td, tc.ns, tc.svc, tc.site)
		td, ns, svc, site, ok := wire.ParseServiceID(id)
		if !ok || td != tc.td || ns != tc.ns || svc != tc.svc || site != tc.site {
			t.Errorf("ParseServiceID(%s) = %q %q %q %q %v", id, td, ns, svc, site, ok)
		}
	}
}

func TestParseServiceIDRefuses(t *testing.T) {
	for _, id := range []string{
		"",
		"spiffe://medmesh.local",
		"spiffe://medmesh.local/",
		"https://medmesh.local/ns/default/svc/emr",
		"SPIFFE://medmesh.local/ns/default/svc/emr",
		"spiffe:///ns/default/svc/emr",
		"spiffe://MedMesh.local/ns/default/svc/emr",
		"spiffe://medmesh.local/ns/default/svc/emr/",
		"spiffe://medmesh.local/ns/default/svc/",
		"spiffe://medmesh.local/ns//svc/emr",
		"spiffe://medmesh.local/ns/default/svc/emr/site",
		"spiffe://medmesh.local/ns/default/svc/emr/site/",
		"spiffe://medmesh.local/ns/default/svc/emr/site/Site-A",
		"spiffe://medmesh.local/ns/default/svc/emr/site/-a",
		"spiffe://medmesh.local/ns/default/svc/emr/site/a_b",
		"spiffe://medmesh.local/ns/default/svc/emr/site/" + strings.Repeat("x", 64),
		"spiffe://medmesh.local/ns/default/svc/emr/site/a/extra",
		"spiffe://medmesh.local/ns/default/svc/emr/zone/a",
		"spiffe://medmesh.local/ns/default/sa/emr",
		"spiffe://medmesh.local/svc/emr",
		"spiffe://medmesh.local/ns/default/svc/..",
		"spiffe://medmesh.local/ns/default/svc/emr?x=1",
		"spiffe://medmesh.local/ns/default/svc/emr#f",
		"spiffe://user@medmesh.local/ns/default/svc/emr",
		"spiffe://medmesh.local:443/ns/default/svc/emr",
		"spiffe://medmesh.local/ns/default/svc/e%20r",
		"spiffe://medmesh.local/*",
	} {
		if td, ns, svc, site, ok := wire.ParseServiceID(id); ok {
			t.Errorf("ParseServiceID(%q) accepted: %q %q %q %q", id, td, ns, svc, site)
		}
	}
}

func TestValidateSite(t *testing.T) {
	for _, good := range []string{"a", "site-a", "hub", "x1", strings.Repeat("a", 63), "0"} {
		if err := wire.ValidateSite(good); err != nil {
			t.Errorf("%q refused: %v", good, err)
		}
	}
	for _, bad := range []string{"", "Site", "site_a", "site.a", "-a", "a-", strings.Repeat("a", 64), "a b", "ä"} {
		if err := wire.ValidateSite(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
