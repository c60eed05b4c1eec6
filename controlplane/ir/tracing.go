package ir

import (
	"fmt"
	"net"
	"strconv"
)

// EnvoyTracing is where Envoy sidecars send their request spans (OTLP over
// gRPC) and how many requests they start a trace for. It comes from the
// control plane's flags, not from a policy: the collector is a fact of
// the site's deployment, like the control plane's own OTEL_* variables,
// and a policy author able to point every sidecar's spans (which name
// services, callers and timings) at an address of their choice is an
// exfiltration path a hospital would not want. The zero value is off.
type EnvoyTracing struct {
	// CollectorHost and CollectorPort are the OTLP/gRPC collector
	// (an OTel collector, Jaeger, Tempo). Empty host: tracing is off.
	CollectorHost string `json:"collectorHost,omitempty"`
	CollectorPort int    `json:"collectorPort,omitempty"`
	// SamplingPercent is the share of requests without a sampling
	// decision (no sampled traceparent from the caller) that an Envoy
	// starts a trace for, 0-100.
	SamplingPercent float64 `json:"samplingPercent,omitempty"`
}

// Enabled reports whether Envoy sidecars are given tracing.
func (t EnvoyTracing) Enabled() bool { return t.CollectorHost != "" }

// DefaultEnvoyTraceSampling is the sampling percentage when only the
// collector is given: every request, as Envoy itself defaults to, so a
// first look at a trace backend finds the requests one just made.
// Production meshes set --envoy-trace-sampling.
const DefaultEnvoyTraceSampling = 100

// ParseEnvoyTracing checks the control plane's Envoy tracing flags: addr
// is the collector's host:port (empty: tracing off, and sampling must be
// left alone), sampling a percentage (negative: the default).
func ParseEnvoyTracing(addr string, sampling float64) (EnvoyTracing, error) {
	if addr == "" {
		if sampling >= 0 {
			return EnvoyTracing{}, fmt.Errorf("--envoy-trace-sampling is set but --envoy-otlp-address is not: Envoy tracing needs a collector")
		}
		return EnvoyTracing{}, nil
	}
	host, p, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return EnvoyTracing{}, fmt.Errorf("--envoy-otlp-address %q: want host:port of an OTLP/gRPC collector (e.g. otel-collector:4317)", addr)
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 1 || port > 65535 {
		return EnvoyTracing{}, fmt.Errorf("--envoy-otlp-address %q: port %q is not a number from 1 to 65535", addr, p)
	}
	if sampling < 0 {
		sampling = DefaultEnvoyTraceSampling
	}
	if sampling > 100 {
		return EnvoyTracing{}, fmt.Errorf("--envoy-trace-sampling %g: want a percentage from 0 to 100", sampling)
	}
	return EnvoyTracing{CollectorHost: host, CollectorPort: port, SamplingPercent: sampling}, nil
}
