package main

import (
	"strings"
	"testing"

	"medmesh/controlplane/bootstrap"
)

func TestParseFlagsDefaultsAndErrors(t *testing.T) {
	o, err := parseFlags([]string{"--service", "imaging", "--calls", " emr, ,his "})
	if err != nil {
		t.Fatal(err)
	}
	if o.lb != "least_request" || strings.Join(o.calls, ",") != "emr,his" {
		t.Errorf("lb %q calls %q; want least_request and emr,his", o.lb, o.calls)
	}
	for _, bad := range [][]string{
		{"--service", "pharmacy"},
		{"--service", "emr", "extra"}, // positional arguments would stop the re-exec's pinned flags
		{"--service", "emr", "--ttl", "100ms"},
	} {
		if _, err := parseFlags(bad); err == nil {
			t.Errorf("parseFlags(%q): want an error", bad)
		}
	}
}

// --probe runs as any service (the demo's billing caller has no kind of
// its own) but needs something to call.
func TestParseFlagsProbe(t *testing.T) {
	o, err := parseFlags([]string{"--probe", "--service", "billing", "--calls", "emr", "--svid-dir", "/run/svid"})
	if err != nil {
		t.Fatal(err)
	}
	if !o.probe || o.service != "billing" || o.svidDir != "/run/svid" {
		t.Errorf("parsed %+v", o)
	}
	if _, err := parseFlags([]string{"--probe", "--service", "billing"}); err == nil || !strings.Contains(err.Error(), "--calls") {
		t.Errorf("--probe without --calls: got %v, want an error naming --calls", err)
	}
	if _, err := parseFlags([]string{"--service", "billing", "--calls", "emr"}); err == nil {
		t.Error("billing without --probe: want an error (it cannot register as a clinical service)")
	}
}

// The bootstrap a service writes for itself names the certificate
// provider files when --svid-dir is set, so xDS credentials find the SVID.
func TestBootstrapNamesSVIDDir(t *testing.T) {
	b, err := bootstrap.Proxyless(bootstrap.Options{XDSAddress: "127.0.0.1:15010", NodeID: "emr-1", Service: "emr", SVIDDir: "/run/svid/emr-1"})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"/run/svid/emr-1/svid.pem", "/run/svid/emr-1/svid_key.pem", "/run/svid/emr-1/bundle.pem"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("bootstrap lacks %q:\n%s", want, b)
		}
	}
}
