package ir

import (
	"strings"
	"testing"
)

func TestParseEnvoyTracing(t *testing.T) {
	for _, c := range []struct {
		addr     string
		sampling float64
		want     EnvoyTracing
		err      string
	}{
		{addr: "", sampling: -1, want: EnvoyTracing{}},
		{addr: "otel-collector:4317", sampling: -1, want: EnvoyTracing{CollectorHost: "otel-collector", CollectorPort: 4317, SamplingPercent: 100}},
		{addr: "10.0.0.7:4317", sampling: 0.5, want: EnvoyTracing{CollectorHost: "10.0.0.7", CollectorPort: 4317, SamplingPercent: 0.5}},
		{addr: "[fd00::7]:4317", sampling: 0, want: EnvoyTracing{CollectorHost: "fd00::7", CollectorPort: 4317}},
		{addr: "", sampling: 10, err: "--envoy-otlp-address is not"},
		{addr: "otel-collector", sampling: -1, err: "want host:port"},
		{addr: ":4317", sampling: -1, err: "want host:port"},
		{addr: "otel-collector:http", sampling: -1, err: "port \"http\""},
		{addr: "otel-collector:70000", sampling: -1, err: "port \"70000\""},
		{addr: "otel-collector:4317", sampling: 101, err: "--envoy-trace-sampling 101"},
	} {
		got, err := ParseEnvoyTracing(c.addr, c.sampling)
		switch {
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("%q %g: error %v, want one containing %q", c.addr, c.sampling, err, c.err)
		case c.err == "" && err != nil:
			t.Errorf("%q %g: %v", c.addr, c.sampling, err)
		case c.err == "" && got != c.want:
			t.Errorf("%q %g: %+v, want %+v", c.addr, c.sampling, got, c.want)
		}
		if c.err == "" && got.Enabled() != (c.addr != "") {
			t.Errorf("%q: Enabled() = %t", c.addr, got.Enabled())
		}
	}
}
