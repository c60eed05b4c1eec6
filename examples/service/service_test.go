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

// A bootstrap written for another instance must be refused: the server
// would never get its inbound listener.
func TestCheckNodeID(t *testing.T) {
	b, err := bootstrap.Proxyless(bootstrap.Options{XDSAddress: "127.0.0.1:15010", NodeID: "emr-1", Service: "emr"})
	if err != nil {
		t.Fatal(err)
	}
	if err := checkNodeID(b, "emr-1"); err != nil {
		t.Errorf("matching node ID: %v", err)
	}
	if err := checkNodeID(b, "emr-2"); err == nil || !strings.Contains(err.Error(), "emr-1") {
		t.Errorf("mismatched node ID: got %v, want an error naming emr-1", err)
	}
}
