package xds

import (
	"strings"
	"testing"

	"medmesh/controlplane/ir"
)

// Each reason a proxyless server gets no listener is named so that an
// operator can act on it.
func TestWhyNoListener(t *testing.T) {
	inst := &ir.Instance{ID: "lab-1", Address: "10.0.0.7", Port: 18551}
	ps := ProxyStatus{ID: "lab-1", Service: "lab"}
	for _, tc := range []struct {
		name string
		as   publishedAs
		addr string
		want string
	}{
		{"not an address", publishedAs{service: "lab", instance: inst, http: true}, "lab:18551", "not an IP:port"},
		{"not an instance", publishedAs{service: "lab"}, "0.0.0.0:18551", `no instance of service "lab" is registered with ID "lab-1"`},
		{"TCP service", publishedAs{service: "lab", instance: inst}, "0.0.0.0:18551", "not a gRPC service"},
		{"another port", publishedAs{service: "lab", instance: inst, http: true}, "[::]:9999",
			`no instance of service "lab" is registered on port 9999 (instance "lab-1" is registered at 10.0.0.7:18551)`},
		{"another address", publishedAs{service: "lab", instance: inst, http: true}, "10.0.0.8:18551", "on that address or on 0.0.0.0 or [::]"},
	} {
		if got := whyNoListener(ps, tc.as, tc.addr); !strings.Contains(got, tc.want) {
			t.Errorf("%s: %q; want it to say %q", tc.name, got, tc.want)
		}
	}
}
