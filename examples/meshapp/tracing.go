package meshapp

import (
	"context"
	"log/slog"
	"time"

	"medmesh/internal/telemetry"
)

// StartTracing sets up OpenTelemetry for an example workload from the
// standard OTEL_* variables (OTEL_EXPORTER_OTLP_ENDPOINT and friends; see
// internal/telemetry): the service name is the Consul service, the
// instance its ID. Without an endpoint nothing is exported, but the W3C
// propagators are set, so the workload still passes its callers' traces
// on. Call the returned function on the way out: it flushes.
func StartTracing(service, instance string, log *slog.Logger) (shutdown func(), err error) {
	p, err := telemetry.Setup(context.Background(), telemetry.Options{Service: service, Instance: instance})
	if err != nil {
		return nil, err
	}
	if p.Enabled() {
		log.Info("exporting traces over OTLP", "endpoint", p.Endpoint)
	}
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := p.Shutdown(ctx); err != nil {
			log.Warn("flushing traces failed", "err", err)
		}
	}, nil
}
