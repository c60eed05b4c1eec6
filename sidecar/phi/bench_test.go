package phi

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace/noop"

	"medmesh/sidecar/audit"
	"medmesh/sidecar/sched"
)

type discard struct{}

func (discard) Record(audit.Event) error { return nil }

// BenchmarkAdmit is the extension's core per request (classify, admit,
// release, metrics, span, audit hand-off), with OTel's global tracer and
// no exporter (as `medmesh sidecar` runs without OTEL_* variables) and
// with the no-op tracer, which shows what the span costs when nothing
// records it.
func BenchmarkAdmit(b *testing.B) {
	for _, tc := range []struct {
		name string
		o    Options
	}{
		{"global-tracer", Options{}},
		{"noop-tracer", Options{Tracer: noop.NewTracerProvider().Tracer("")}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			o := tc.o
			o.Scheduler, o.Service, o.Audit = sched.New(sched.Config{}), "emr", discard{}
			o.Metrics = NewMetrics(prometheus.NewRegistry())
			e := New(o)
			in := Input{Method: "GET", Path: "/fhir/Patient/123", Header: map[string]string{"accept": "application/fhir+json",
				"x-request-id": "0b7c6a2e-1f3d-4c5b-9a8e-2d4f6b8c0e1a"}}
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				a, err := e.Admit(ctx, in)
				if err != nil {
					b.Fatal(err)
				}
				a.Done(200, "")
			}
		})
	}
}
