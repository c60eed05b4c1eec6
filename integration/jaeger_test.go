package integration

import (
	"context"
	"errors"
	"testing"

	"medmesh/internal/jaegertest"
	"medmesh/internal/telemetry"
)

// startJaeger starts a real Jaeger for the test and points OTLP
// exporters built from the environment at it, as the binaries build
// theirs. provider builds one program's tracer provider for site (not
// installed globally: several programs share this process); providers
// are shut down, flushing their spans, before Jaeger stops.
func startJaeger(ctx context.Context, t *testing.T, site string) (j *jaegertest.Jaeger, provider func(service, instance string) *telemetry.Provider) {
	t.Helper()
	j, err := jaegertest.Start(ctx, t.TempDir())
	if errors.Is(err, jaegertest.ErrNoBinary) {
		t.Fatalf("%v: run make tools", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(j.Stop) // registered first, so it runs after every provider's shutdown
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", j.OTLPEndpoint())
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
	t.Setenv("OTEL_SERVICE_NAME", "")
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "100") // export promptly; the tests poll Jaeger anyway
	return j, func(service, instance string) *telemetry.Provider {
		t.Helper()
		p, err := telemetry.Setup(ctx, telemetry.Options{Service: service, Instance: instance, Site: site, NoGlobal: true})
		if err != nil || !p.Enabled() {
			t.Fatalf("telemetry for %s: enabled=%t %v", service, p.Enabled(), err)
		}
		t.Cleanup(func() { _ = p.Shutdown(context.Background()) })
		return p
	}
}
