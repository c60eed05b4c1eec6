package jaegertest

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
)

// A span sent over OTLP gRPC comes back through the query API.
func TestJaegerRoundTrip(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real Jaeger")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	j, err := Start(ctx, t.TempDir())
	if errors.Is(err, ErrNoBinary) {
		t.Fatal(err) // run make tools
	}
	if err != nil {
		t.Fatal(err)
	}
	defer j.Stop()
	exp, err := otlptracegrpc.New(ctx, otlptracegrpc.WithEndpointURL(j.OTLPEndpoint()))
	if err != nil {
		t.Fatal(err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp),
		sdktrace.WithResource(resource.NewSchemaless(semconv.ServiceName("jaegertest"))))
	_, span := tp.Tracer("t").Start(ctx, "hello")
	span.End()
	id := span.SpanContext().TraceID().String()
	if err := tp.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	for {
		tr, err := j.Trace(ctx, id)
		if err == nil {
			if len(tr.Spans) != 1 || tr.Spans[0].OperationName != "hello" || tr.Service(&tr.Spans[0]) != "jaegertest" {
				t.Fatalf("trace = %+v", tr)
			}
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("trace %s never appeared: %v", id, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
	svcs, err := j.Services(ctx)
	if err != nil || !slices.Contains(svcs, "jaegertest") {
		t.Fatalf("services = %v, %v", svcs, err)
	}
}
