package main

import (
	"context"
	"log/slog"
	"time"

	"medmesh/internal/telemetry"
)

// startTracing sets up OpenTelemetry from the standard OTEL_* variables
// (internal/telemetry) and returns the function that flushes it on the
// way out. Without an endpoint nothing is exported and it says nothing.
func startTracing(log *slog.Logger, o telemetry.Options) (shutdown func(), err error) {
	o.Version = version
	p, err := telemetry.Setup(context.Background(), o)
	if err != nil {
		return nil, err
	}
	if p.Enabled() {
		log.Info("exporting traces over OTLP", "endpoint", p.Endpoint, "service", o.Service)
	}
	return func() {
		// Bounded: a collector that went away must not hold the exit.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := p.Shutdown(ctx); err != nil {
			log.Warn("flushing traces failed", "err", err)
		}
	}, nil
}
