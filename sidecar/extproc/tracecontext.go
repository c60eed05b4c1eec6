package extproc

import (
	"context"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/metadata"
)

// The admission span joins the request's trace. Its parent is read, with
// the global (W3C) propagator, from the request's own headers first: the
// caller's traceparent, or the one Envoy's connection manager put there
// when Envoy traces (its inbound span). Failing that, from the ext_proc
// stream's gRPC metadata, where Envoy's gRPC client puts the span of its
// call to us when it traces. Only when the engine's tracer records
// (phi.Engine.Tracing): a sidecar exporting nothing reads nothing.

// traceKeys are the only headers the carriers give the propagator. The
// global propagator also reads W3C baggage, which is free text a client
// could fill with anything; it has no business in the sidecar.
func traceKey(key string) bool {
	return strings.EqualFold(key, "traceparent") || strings.EqualFold(key, "tracestate")
}

// traceContext returns ctx carrying the request's remote span context,
// or ctx itself when neither the headers nor the metadata have one.
func traceContext(ctx context.Context, h *corev3.HeaderMap) context.Context {
	prop := otel.GetTextMapPropagator()
	if c := prop.Extract(ctx, (*headerCarrier)(h)); trace.SpanContextFromContext(c).IsValid() {
		return c
	}
	return prop.Extract(ctx, metadataCarrier{ctx})
}

// headerCarrier reads an ext_proc header map as a
// propagation.TextMapCarrier (read only; a pointer, so passing it as the
// interface allocates nothing).
type headerCarrier corev3.HeaderMap

var _ propagation.TextMapCarrier = (*headerCarrier)(nil)

func (c *headerCarrier) Get(key string) string {
	if !traceKey(key) {
		return ""
	}
	for _, h := range (*corev3.HeaderMap)(c).GetHeaders() {
		if strings.EqualFold(h.GetKey(), key) {
			// Envoy sends values in raw_value; value is the older field.
			if raw := h.GetRawValue(); len(raw) > 0 {
				return string(raw)
			}
			return h.GetValue()
		}
	}
	return ""
}

func (c *headerCarrier) Set(string, string) {}

func (c *headerCarrier) Keys() []string {
	var out []string
	for _, h := range (*corev3.HeaderMap)(c).GetHeaders() {
		if traceKey(h.GetKey()) {
			out = append(out, strings.ToLower(h.GetKey()))
		}
	}
	return out
}

// metadataCarrier reads the stream's incoming gRPC metadata (read only).
type metadataCarrier struct{ ctx context.Context }

func (c metadataCarrier) Get(key string) string {
	if !traceKey(key) {
		return ""
	}
	if v := metadata.ValueFromIncomingContext(c.ctx, strings.ToLower(key)); len(v) > 0 {
		return v[0]
	}
	return ""
}

func (c metadataCarrier) Set(string, string) {}

func (c metadataCarrier) Keys() []string {
	md, _ := metadata.FromIncomingContext(c.ctx)
	var out []string
	for k := range md {
		if traceKey(k) {
			out = append(out, k)
		}
	}
	return out
}
