package telemetry

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/attribute"
)

// Without an endpoint nothing is exported and no exporter exists, so no
// connection is ever attempted.
func TestNoEndpointIsNoop(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
	p, err := Setup(context.Background(), Options{Service: "medmesh-test", NoGlobal: true})
	if err != nil {
		t.Fatal(err)
	}
	if p.Enabled() {
		t.Fatal("enabled without an endpoint")
	}
	_, span := p.Tracer("t").Start(context.Background(), "x")
	if span.IsRecording() {
		t.Fatal("no-op provider records spans")
	}
	if err := p.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestDisabledWinsOverEndpoint(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
	t.Setenv("OTEL_SDK_DISABLED", "true")
	p, err := Setup(context.Background(), Options{Service: "medmesh-test", NoGlobal: true})
	if err != nil || p.Enabled() {
		t.Fatalf("OTEL_SDK_DISABLED=true: enabled=%t err=%v", p.Enabled(), err)
	}
}

func TestUnknownProtocolIsRefused(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "carrier-pigeon")
	if _, err := Setup(context.Background(), Options{Service: "medmesh-test", NoGlobal: true}); err == nil {
		t.Fatal("an unknown protocol was accepted")
	}
}

// The program names service, instance and site; OTEL_SERVICE_NAME and
// OTEL_RESOURCE_ATTRIBUTES override.
func TestResourceAttributes(t *testing.T) {
	t.Setenv("OTEL_SERVICE_NAME", "")
	t.Setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=ward-test")
	res, err := Resource(context.Background(), Options{Service: "medmesh-controlplane", Instance: "cp-1", Site: "clinic-a"})
	if err != nil {
		t.Fatal(err)
	}
	got := map[attribute.Key]string{}
	for _, kv := range res.Attributes() {
		got[kv.Key] = kv.Value.Emit()
	}
	for k, v := range map[attribute.Key]string{"service.name": "medmesh-controlplane", "service.instance.id": "cp-1",
		AttrSite: "clinic-a", "deployment.environment": "ward-test"} {
		if got[k] != v {
			t.Errorf("%s = %q, want %q (all: %v)", k, got[k], v, got)
		}
	}
	t.Setenv("OTEL_SERVICE_NAME", "cp-override")
	res, _ = Resource(context.Background(), Options{Service: "medmesh-controlplane"})
	if v, _ := res.Set().Value("service.name"); v.Emit() != "cp-override" {
		t.Errorf("OTEL_SERVICE_NAME did not override: %q", v.Emit())
	}
}
