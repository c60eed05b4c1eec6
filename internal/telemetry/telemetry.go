// Package telemetry sets up OpenTelemetry tracing for medmesh's programs
// (the control plane, the sidecar, the example services) the standard
// way: the OTLP exporter is configured by the OpenTelemetry environment
// variables alone, so an operator points medmesh at a collector or a
// Jaeger exactly as they would any other OTel-instrumented program.
//
//	OTEL_EXPORTER_OTLP_ENDPOINT / OTEL_EXPORTER_OTLP_TRACES_ENDPOINT  where spans go
//	OTEL_EXPORTER_OTLP_PROTOCOL / OTEL_EXPORTER_OTLP_TRACES_PROTOCOL  http/protobuf (default) or grpc
//	OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES                       override the resource
//	OTEL_TRACES_SAMPLER, OTEL_TRACES_SAMPLER_ARG                      sampling (default parentbased_always_on)
//	OTEL_SDK_DISABLED=true                                            nothing at all
//
// Without an endpoint nothing is exported and no connection is ever
// attempted: the tracer provider is OTel's no-op one, whose spans cost a
// pointer. Propagators (W3C tracecontext and baggage) are set either
// way, so a medmesh hop without an exporter still passes its caller's
// trace on.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// AttrSite names the edge site a process serves (resource attribute).
const AttrSite = "medmesh.site"

// Options name the process; the OTEL_* variables override them.
type Options struct {
	// Service is service.name unless OTEL_SERVICE_NAME is set.
	Service string
	// Instance is service.instance.id (a node ID, an instance ID);
	// empty: host name and process ID.
	Instance string
	// Site is medmesh.site; empty: none.
	Site string
	// Version is service.version; empty: none.
	Version string
	// NoGlobal leaves OTel's global provider and propagators alone (tests
	// that run several programs in one process).
	NoGlobal bool
}

// Provider is the process's tracer provider; Shutdown flushes it.
type Provider struct {
	trace.TracerProvider
	sdk *sdktrace.TracerProvider // nil: nothing is exported
	// Endpoint says where spans go, for the start-up log line; "" when
	// nowhere.
	Endpoint string
}

// Enabled reports whether spans are exported.
func (p *Provider) Enabled() bool { return p != nil && p.sdk != nil }

// Shutdown flushes what is buffered and stops the exporter. Call it on
// the way out, with a deadline: a collector that does not answer must
// not hold the process.
func (p *Provider) Shutdown(ctx context.Context) error {
	if !p.Enabled() {
		return nil
	}
	return p.sdk.Shutdown(ctx)
}

// Setup builds the tracer provider from the environment and, unless
// NoGlobal, installs it and the W3C propagators as OTel's globals. An
// error means the variables are set but wrong (an unknown protocol): the
// caller should refuse to start rather than run untraced by surprise.
func Setup(ctx context.Context, o Options) (*Provider, error) {
	if !o.NoGlobal {
		otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	}
	p, err := build(ctx, o)
	if err != nil {
		return nil, err
	}
	if !o.NoGlobal && p.Enabled() {
		otel.SetTracerProvider(p.sdk)
	}
	return p, nil
}

func build(ctx context.Context, o Options) (*Provider, error) {
	env := os.Getenv
	off := &Provider{TracerProvider: noop.NewTracerProvider()}
	if disabled, _ := strconv.ParseBool(strings.TrimSpace(env("OTEL_SDK_DISABLED"))); disabled {
		return off, nil
	}
	endpoint := env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
	if endpoint == "" {
		endpoint = env("OTEL_EXPORTER_OTLP_ENDPOINT")
	}
	if endpoint == "" || strings.EqualFold(env("OTEL_TRACES_EXPORTER"), "none") {
		return off, nil
	}
	protocol := env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
	if protocol == "" {
		protocol = env("OTEL_EXPORTER_OTLP_PROTOCOL")
	}
	// The exporters read the endpoint, headers, TLS and timeout variables
	// themselves; only the choice between them is ours.
	var exp sdktrace.SpanExporter
	var err error
	switch protocol {
	case "", "http/protobuf":
		exp, err = otlptracehttp.New(ctx)
	case "grpc":
		exp, err = otlptracegrpc.New(ctx)
	default:
		return nil, fmt.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL=%q: medmesh exports traces with grpc or http/protobuf", protocol)
	}
	if err != nil {
		return nil, fmt.Errorf("OTLP trace exporter for %s: %w", endpoint, err)
	}
	res, err := Resource(ctx, o)
	if err != nil {
		return nil, err
	}
	// The sampler is not given, so the SDK reads OTEL_TRACES_SAMPLER(_ARG).
	sdk := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	return &Provider{TracerProvider: sdk, sdk: sdk, Endpoint: endpoint}, nil
}

// Resource is the process's resource: service name, instance and site
// from o, then OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES on top.
func Resource(ctx context.Context, o Options) (*resource.Resource, error) {
	inst := o.Instance
	if inst == "" {
		host, _ := os.Hostname()
		inst = host + "-" + strconv.Itoa(os.Getpid())
	}
	attrs := []attribute.KeyValue{semconv.ServiceName(o.Service), semconv.ServiceInstanceID(inst)}
	if o.Site != "" {
		attrs = append(attrs, attribute.String(AttrSite, o.Site))
	}
	if o.Version != "" {
		attrs = append(attrs, semconv.ServiceVersion(o.Version))
	}
	// Later options win: the variables override what the program says.
	res, err := resource.New(ctx, resource.WithAttributes(attrs...), resource.WithTelemetrySDK(), resource.WithFromEnv())
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		return nil, err
	}
	return res, nil
}
