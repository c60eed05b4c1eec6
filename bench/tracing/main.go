// Command tracing measures what tracing configuration changes costs the
// control plane: the time from a catalog change to every proxy's ACK,
// with tracing on (OTel SDK, batch processor, spans discarded by the
// exporter so no network is measured) and off (no-op provider, the
// default without OTEL_EXPORTER_OTLP_ENDPOINT). One control plane and one
// set of simulated proxies serve both; changes alternate between the two
// so drift (GC, the machine's other load) is charged to neither. It
// prints `BENCH trace_overhead_per_change_ms=` (on minus off, mean).
//
//	go run ./bench/tracing -services 200 -proxies 100   # a span per push
//	go run ./bench/tracing -services 200 -proxies 500   # one summary span
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
	flag.Parse()
	if err := run(*services, *proxies, *changes); err != nil {
		fmt.Fprintln(os.Stderr, "bench/tracing:", err)
		os.Exit(1)
	}
}

func run(services, proxies, changes int) error {
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
	src.send(catalog(services, 0))
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
	if err := converged(ctx, cp, proxies, nil); err != nil {
		return fmt.Errorf("initial config: %w", err)
	}
	var on, off []time.Duration
	for i := 1; i <= 2*changes; i++ {
		tracing := i%2 == 0
		sw.enabled.Store(tracing)
		before := published(cp)
		start := time.Now()
		src.send(catalog(services, i)) // one more service: every proxy's clusters change
		if err := converged(ctx, cp, proxies, before); err != nil {
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
	fmt.Printf("BENCH trace_overhead_per_change_ms=%.2f\n", ms(mOn-mOff))
	return nil
}

// published returns the cluster version published for each proxy.
func published(cp *controlplane.ControlPlane) map[string]string {
	out := map[string]string{}
	for _, st := range cp.XDS().Tracker().Statuses() {
		if pub, ok := cp.XDS().PublishedFor(st.ID); ok {
			out[st.ID] = pub.Versions[resource.ClusterType]
		}
	}
	return out
}

// converged waits until every proxy has ACKed the clusters published
// for it, a version other than the one it had before (nil: any).
func converged(ctx context.Context, cp *controlplane.ControlPlane, n int, before map[string]string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		done := 0
		for _, st := range cp.XDS().Tracker().Statuses() {
			pub, ok := cp.XDS().PublishedFor(st.ID)
			if !ok {
				continue
			}
			v := pub.Versions[resource.ClusterType]
			if st.Types["CDS"].Acked == v && (before == nil || before[st.ID] != v) {
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

func catalog(services, extra int) *registry.Catalog {
	var raw []registry.RawInstance
	for i := range services + extra {
		raw = append(raw, registry.RawInstance{ServiceName: fmt.Sprintf("svc-%d", i), ID: fmt.Sprintf("svc-%d-1", i),
			Address: "10.0.0.1", Port: 10000 + i, Health: registry.HealthPassing,
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
