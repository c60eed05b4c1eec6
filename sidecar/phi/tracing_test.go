package phi

import (
	"testing"

	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// TestTracing: a front end reads trace context only for a tracer that
// can record: not the no-op one, not OTel's global placeholder, but the
// global SDK provider once installed (after the engine was built).
func TestTracing(t *testing.T) {
	if New(Options{Tracer: noop.NewTracerProvider().Tracer("")}).Tracing() {
		t.Error("no-op tracer: tracing")
	}
	tp := sdktrace.NewTracerProvider()
	if !New(Options{Tracer: tp.Tracer("")}).Tracing() {
		t.Error("SDK tracer: not tracing")
	}
	e := New(Options{})
	if e.Tracing() {
		t.Error("global placeholder provider: tracing")
	}
	prev := otel.GetTracerProvider()
	otel.SetTracerProvider(tp)
	t.Cleanup(func() { otel.SetTracerProvider(prev) })
	if !e.Tracing() {
		t.Error("global SDK provider installed after New: not tracing")
	}
}
