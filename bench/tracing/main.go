// Command tracing measures what tracing configuration changes costs the
// control plane: the time from a catalog change to every proxy's ACK,
// with tracing on (OTel SDK, batch processor, spans discarded by the
// exporter so no network is measured) and off (no-op provider, the
// default without OTEL_EXPORTER_OTLP_ENDPOINT). One control plane and one
// set of simulated proxies serve both; changes alternate between the two
// so drift (GC, the machine's other load) is charged to neither. It
// prints `BENCH trace_overhead_per_change_ms=` (on minus off, mean).
// With -change health the changes are health changes instead (one
// instance passing <-> warning: every proxy's endpoints change, nothing
// else), pushed over EDS, and it prints
// `BENCH trace_overhead_per_health_change_ms=`.
//
//	go run ./bench/tracing -services 200 -proxies 100   # a span per push
//	go run ./bench/tracing -services 200 -proxies 500   # one summary span
//	go run ./bench/tracing -change health              # EDS pushes
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"sync/atomic"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"go.opentelemetry.io/otel/sdk/trace"
	oteltrace "go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/embedded"
	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"medmesh/controlplane"
	cpxds "medmesh/controlplane/xds"
	"medmesh/internal/simproxy"
	"medmesh/registry"
)

func main() {
	services := flag.Int("services", 200, "services in the catalog")
	proxies := flag.Int("proxies", 100, "simulated Envoy proxies (SotW)")
	changes := flag.Int("changes", 20, "changes to time in each mode")
	kind := flag.String("change", "service", "what changes: service (one more service: clusters, listeners and endpoints) or health (an instance passing <-> warning: endpoints only)")
	flag.Parse()
	if *kind != "service" && *kind != "health" {
		fmt.Fprintln(os.Stderr, "bench/tracing: -change: want service or health")
		os.Exit(2)
	}
	if err := run(*services, *proxies, *changes, *kind == "health"); err != nil {
		fmt.Fprintln(os.Stderr, "bench/tracing:", err)
		os.Exit(1)
	}
}

func run(services, proxies, changes int, health bool) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	exp := &discard{}
	sdk := trace.NewTracerProvider(trace.WithBatcher(exp))
	defer sdk.Shutdown(context.Background())
	sw := &switchable{on: sdk, off: noop.NewTracerProvider()}
	src := &chanSource{out: make(chan *registry.Catalog, 1)}
	cp, err := controlplane.New(controlplane.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Source: src,
		XDSListen: "127.0.0.1:0", AdminListen: "127.0.0.1:0", Coalesce: time.Millisecond, TracerProvider: sw})
	if err != nil {
		return err
	}
	go cp.Run(ctx)
	src.send(catalog(services, 0, false))
	conn, err := grpc.NewClient(cp.XDSAddr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	for i := range proxies {
		if _, err := simproxy.Start(ctx, conn, simproxy.Options{NodeID: fmt.Sprintf("proxy-%d", i), Cluster: "client"}); err != nil {
			return err
		}
	}
	typ := resource.ClusterType
	if health {
		typ = resource.EndpointType
	}
	if err := converged(ctx, cp, proxies, resource.ClusterType, nil); err != nil {
		return fmt.Errorf("initial config: %w", err)
	}
	if health {
		// Every proxy holds svc-0's endpoints before the first timed change.
		if err := converged(ctx, cp, proxies, resource.EndpointType, nil); err != nil {
			return fmt.Errorf("initial endpoints: %w", err)
		}
	}
	var on, off []time.Duration
	for i := 1; i <= 2*changes; i++ {
		tracing := i%2 == 0
		sw.enabled.Store(tracing)
		before := acked(cp, typ)
		start := time.Now()
		if health {
			src.send(catalog(services, 0, i%2 == 1)) // svc-0-1 warning (tracing off), passing again (on)
		} else {
			src.send(catalog(services, i, false)) // one more service: every proxy's clusters change
		}
		if err := converged(ctx, cp, proxies, typ, before); err != nil {
			return fmt.Errorf("change %d: %w", i, err)
		}
		if tracing {
			on = append(on, time.Since(start))
		} else {
			off = append(off, time.Since(start))
		}
	}
	mOn, mOff := mean(on), mean(off)
	fmt.Printf("services=%d proxies=%d changes=%d per mode (push spans: %s)\n", services, proxies, changes,
		map[bool]string{true: "one each", false: "summary span"}[proxies <= cpxds.PushSpanLimit])
	fmt.Printf("change to every ACK: tracing off mean %.2f ms p50 %.2f ms; on mean %.2f ms p50 %.2f ms; spans exported %d\n",
		ms(mOff), ms(p50(off)), ms(mOn), ms(p50(on)), exp.n.Load())
	if health {
		fmt.Printf("BENCH trace_overhead_per_health_change_ms=%.2f\n", ms(mOn-mOff))
	} else {
		fmt.Printf("BENCH trace_overhead_per_change_ms=%.2f\n", ms(mOn-mOff))
	}
	return nil
}

// acked returns the version of typ each proxy has ACKed.
func acked(cp *controlplane.ControlPlane, typ string) map[string]string {
	out := map[string]string{}
	for _, st := range cp.XDS().Tracker().Statuses() {
		out[st.ID] = st.Types[short(typ)].Acked
	}
	return out
}

func short(typ string) string {
	if typ == resource.EndpointType {
		return "EDS"
	}
	return "CDS"
}

// converged waits until every proxy has ACKed a version of typ other
// than the one it had before (nil: any); for clusters, the one published
// for it.
func converged(ctx context.Context, cp *controlplane.ControlPlane, n int, typ string, before map[string]string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		done := 0
		for _, st := range cp.XDS().Tracker().Statuses() {
			v := st.Types[short(typ)].Acked
			if typ == resource.ClusterType {
				pub, ok := cp.XDS().PublishedFor(st.ID)
				if !ok || pub.Versions[typ] != v {
					continue
				}
			}
			if v != "" && (before == nil || before[st.ID] != v) {
				done++
			}
		}
		if done == n {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d of %d proxies converged", done, n)
		case <-time.After(time.Millisecond):
		}
	}
}

// catalog has services+extra services of one instance each; degraded
// puts svc-0's instance in warning (DEGRADED endpoints).
func catalog(services, extra int, degraded bool) *registry.Catalog {
	var raw []registry.RawInstance
	for i := range services + extra {
		health := registry.HealthPassing
		if i == 0 && degraded {
			health = registry.HealthWarning
		}
		raw = append(raw, registry.RawInstance{ServiceName: fmt.Sprintf("svc-%d", i), ID: fmt.Sprintf("svc-%d-1", i),
			Address: "10.0.0.1", Port: 10000 + i, Health: health,
			ServiceMeta: map[string]string{registry.MetaProtocol: "grpc"}})
	}
	cat, _ := registry.BuildCatalog(raw)
	return cat
}

// chanSource is a catalog source the benchmark drives.
type chanSource struct{ out chan *registry.Catalog }

func (s *chanSource) Name() string                  { return "bench" }
func (s *chanSource) Status() registry.SourceStatus { return registry.SourceStatus{Synced: true} }
func (s *chanSource) send(c *registry.Catalog)      { s.out <- c }
func (s *chanSource) Run(ctx context.Context, out chan *registry.Catalog) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case c := <-s.out:
			out <- c
		}
	}
}

// switchable turns tracing on and off between changes of one control
// plane: each round's root span is started from whichever provider is
// on, and the rest of the round follows its span.
type switchable struct {
	embedded.TracerProvider
	enabled atomic.Bool
	on, off oteltrace.TracerProvider
}

func (s *switchable) Tracer(name string, o ...oteltrace.TracerOption) oteltrace.Tracer {
	return &switchTracer{s: s, on: s.on.Tracer(name, o...), off: s.off.Tracer(name, o...)}
}

type switchTracer struct {
	embedded.Tracer
	s       *switchable
	on, off oteltrace.Tracer
}

func (t *switchTracer) Start(ctx context.Context, name string, o ...oteltrace.SpanStartOption) (context.Context, oteltrace.Span) {
	if t.s.enabled.Load() {
		return t.on.Start(ctx, name, o...)
	}
	return t.off.Start(ctx, name, o...)
}

// discard is an exporter that counts spans and keeps none.
type discard struct{ n atomic.Int64 }

func (d *discard) ExportSpans(_ context.Context, s []trace.ReadOnlySpan) error {
	d.n.Add(int64(len(s)))
	return nil
}
func (d *discard) Shutdown(context.Context) error { return nil }

func mean(d []time.Duration) time.Duration {
	var sum time.Duration
	for _, x := range d {
		sum += x
	}
	return sum / time.Duration(max(1, len(d)))
}

func p50(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
