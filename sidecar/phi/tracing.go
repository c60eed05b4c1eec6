package phi

import (
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// globalDefault is OTel's global tracer provider as the process starts:
// a placeholder handing out no-op spans until a real provider is
// installed (internal/telemetry installs one only when it exports).
var globalDefault = otel.GetTracerProvider()

// Tracing reports whether the engine's tracer can record spans, so a
// front end reads a request's trace context only then: without an
// exporter the admission span is a no-op and its parent is never looked
// at, and the extension must not pay for finding it on every request.
// It is a pointer comparison per call, so a provider installed after the
// engine was built is seen.
func (e *Engine) Tracing() bool {
	if !e.globalTracer {
		_, isNoop := e.o.Tracer.(noop.Tracer)
		return !isNoop
	}
	tp := otel.GetTracerProvider()
	if tp == globalDefault {
		return false
	}
	_, isNoop := tp.(noop.TracerProvider)
	return !isNoop
}

// startKind is the admission span's kind: a step (INTERNAL) of a local
// server span when the front end runs inside an instrumented server; the
// request's own span in this process (SERVER) otherwise, including under
// a parent that came from the caller or Envoy (a remote span context).
func startKind(parent trace.SpanContext) trace.SpanStartOption {
	if parent.IsValid() && !parent.IsRemote() {
		return spanInternal
	}
	return spanServer
}
