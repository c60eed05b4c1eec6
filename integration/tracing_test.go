package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/propagation"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"medmesh/api/admin"
	"medmesh/controlplane"
	"medmesh/controlplane/bootstrap"
	cpxds "medmesh/controlplane/xds"
	"medmesh/examples/clinical"
	"medmesh/internal/jaegertest"
	"medmesh/registry"
	"medmesh/sidecar/middleware"
	"medmesh/sidecar/phi"
	"medmesh/sidecar/sched"
)

// tracePHI is what the caller sends that is patient data; none of it may
// reach the trace backend.
var tracePHI = []string{"MRN-7731", "Quincy", "1961-04-12"}

// TestTracesInJaeger runs a real Jaeger, a real Consul, the control plane
// and two proxyless services, each exporting over OTLP as configured by
// the standard OTEL_* variables, and reads back from Jaeger's query API:
// a clinical call is one trace across caller, callee and the PHI
// middleware; a catalog change is one trace with a push span per proxy
// ending in its ACK; /debug/proxies names that trace; a health change is
// one trace with an EDS push per subscribed proxy ending in its ACK; and
// nothing of the PHI the call carried was exported.
func TestTracesInJaeger(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*testTimeout)
	defer cancel()
	j, provider := startJaeger(ctx, t, "ward-a")
	cpTP, emrTP, hisTP := provider("medmesh-controlplane", "cp-1"), provider("emr", "emr-1"), provider("his", "his-1")
	prop := otelgrpc.WithPropagators(propagation.TraceContext{})

	consul := startConsul(t, true)
	cp := startControlPlane(t, consulSource(consul), func(o *controlplane.Options) { o.TracerProvider = cpTP })
	emrPort := freePort(t)
	register(t, consul.Client(), "emr", "emr-1", emrPort, map[string]string{registry.MetaProtocol: "grpc"}, "passing")
	eng := phi.New(phi.Options{Scheduler: sched.New(sched.Config{Limit: 8}), Tracer: emrTP.Tracer("medmesh/sidecar"),
		Service: "emr", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	serveXDS(t, bootstrap.Options{XDSAddress: cp.xdsAddr(), NodeID: "emr-1", Service: "emr"}, emrPort, false,
		&clinical.Server{Instance: "emr-1", Handle: func(context.Context, string) error { return nil }},
		grpc.StatsHandler(otelgrpc.NewServerHandler(otelgrpc.WithTracerProvider(emrTP), prop)),
		grpc.UnaryInterceptor(middleware.UnaryServerInterceptor(eng)))
	cc := dialXDSWith(t, bootstrap.Options{XDSAddress: cp.xdsAddr(), NodeID: "his-1", Service: "his"}, "emr", false,
		grpc.WithStatsHandler(otelgrpc.NewClientHandler(otelgrpc.WithTracerProvider(hisTP), prop)))
	eventually(t, "emr answers through the mesh", func() error {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_, err := clinical.Fetch(cctx, cc, "Observation")
		return err
	})

	// One call full of PHI (metadata, request), under a span of the
	// caller's own, as a workload's handler would make it.
	callCtx, span := hisTP.Tracer("his").Start(ctx, "his.admission-lookup")
	callCtx = metadata.AppendToOutgoingContext(callCtx, "x-patient-name", "Jane Quincy Doe", "x-dob", "1961-04-12")
	if _, err := clinical.Fetch(callCtx, cc, "Patient/MRN-7731"); err != nil {
		t.Fatal(err)
	}
	span.End()
	callTrace := span.SpanContext().TraceID().String()

	// A catalog change: a new service, which every proxy's listeners and
	// clusters change for.
	register(t, consul.Client(), "imaging", "imaging-1", freePort(t), map[string]string{registry.MetaProtocol: "grpc"}, "passing")

	// (a) The call: caller's span -> client span -> server span -> the
	// middleware's admission span, in one trace, from two services.
	call := pollTrace(t, ctx, j, callTrace, func(tr *jaegertest.Trace) error {
		if len(tr.Spans) < 4 {
			return fmt.Errorf("%d spans so far", len(tr.Spans))
		}
		return nil
	})
	byName := map[string]*jaegertest.Span{}
	for i := range call.Spans {
		s := &call.Spans[i]
		byName[call.Service(s)+" "+s.Tag("span.kind")+" "+s.OperationName] = s
	}
	parentOf := func(s *jaegertest.Span) string {
		for _, r := range s.References {
			if r.RefType == "CHILD_OF" {
				return r.SpanID
			}
		}
		return ""
	}
	var client, server, admit *jaegertest.Span
	for k, s := range byName {
		switch {
		case strings.HasPrefix(k, "his client "):
			client = s
		case strings.HasPrefix(k, "emr server "):
			server = s
		case k == "emr internal medmesh.sidecar.admit":
			admit = s
		}
	}
	if client == nil || server == nil || admit == nil {
		t.Fatalf("call trace lacks the client, server or admission span: %v", keysOf(byName))
	}
	if parentOf(server) != client.SpanID || parentOf(admit) != server.SpanID {
		t.Errorf("call trace is not caller -> callee -> admission: %v", keysOf(byName))
	}

	// (b) The change: one trace whose root names the catalog as trigger,
	// built with both services, with a push span per connected proxy
	// that ended in its ACK.
	var change *jaegertest.Trace
	eventuallyCtx(t, ctx, "a configuration-change trace with ACKed pushes to emr-1 and his-1", func() error {
		traces, err := j.Traces(ctx, "medmesh-controlplane", 100)
		if err != nil {
			return err
		}
		for i := range traces {
			if isChangeTrace(&traces[i]) {
				change = &traces[i]
				return nil
			}
		}
		return fmt.Errorf("%d control plane traces, none yet of the imaging change acked by both proxies", len(traces))
	})
	t.Logf("configuration change: trace %s, %d spans; call: trace %s, %d spans", change.TraceID, len(change.Spans), callTrace, len(call.Spans))

	// (c) /debug/proxies names, per proxy, the trace of the last change
	// it ACKed, and Jaeger holds that trace.
	var pr admin.ProxiesResponse
	eventuallyCtx(t, ctx, "trace IDs in /debug/proxies", func() error {
		resp, err := http.Get(cp.adminURL() + "/debug/proxies")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		pr = admin.ProxiesResponse{}
		if err := json.NewDecoder(resp.Body).Decode(&pr); err != nil {
			return err
		}
		for _, p := range pr.Proxies {
			if p.TraceID == "" {
				return fmt.Errorf("proxy %s has no trace ID", p.ID)
			}
		}
		if len(pr.Proxies) != 2 {
			return fmt.Errorf("%d proxies", len(pr.Proxies))
		}
		return nil
	})
	for _, p := range pr.Proxies {
		pollTrace(t, ctx, j, p.TraceID, func(tr *jaegertest.Trace) error {
			for i := range tr.Spans {
				if s := &tr.Spans[i]; s.OperationName == "xds.push" && s.Tag(cpxds.AttrProxyID) == p.ID && s.Tag(cpxds.AttrOutcome) == "ack" {
					return nil
				}
			}
			return fmt.Errorf("no ACKed push span for %s", p.ID)
		})
	}

	// (d) A health change alone (emr-1's Consul check goes critical): its
	// trace has one push, to his-1, the proxy subscribed to emr's
	// endpoints, of type EDS, ending in its ACK; emr-1 (a server, which
	// subscribes to no endpoints) gets none. his-1 then holds that trace.
	since := time.Now().UnixMicro()
	setHealth(t, consul.Client(), "emr-1", "critical")
	var health *jaegertest.Trace
	eventuallyCtx(t, ctx, "a health-change trace with an ACKed EDS push to his-1", func() error {
		traces, err := j.Traces(ctx, "medmesh-controlplane", 100)
		if err != nil {
			return err
		}
		for i := range traces {
			if isHealthTrace(&traces[i], since) {
				health = &traces[i]
				return nil
			}
		}
		return fmt.Errorf("%d control plane traces, none yet of emr-1 going critical acked by his-1", len(traces))
	})
	t.Logf("health change: trace %s, %d spans", health.TraceID, len(health.Spans))
	eventuallyCtx(t, ctx, "his-1 holds the health change's trace", func() error {
		resp, err := http.Get(cp.adminURL() + "/debug/proxies")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		var pr admin.ProxiesResponse
		if err := json.NewDecoder(resp.Body).Decode(&pr); err != nil {
			return err
		}
		for _, p := range pr.Proxies {
			if p.ID == "his-1" && p.TraceID == health.TraceID {
				return nil
			}
		}
		return fmt.Errorf("his-1 does not name trace %s", health.TraceID)
	})

	// Nothing of the PHI the call carried was exported, by any of the
	// three programs.
	for _, svc := range []string{"his", "emr", "medmesh-controlplane"} {
		traces, err := j.Traces(ctx, svc, 1000)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(traces)
		for _, v := range tracePHI {
			if strings.Contains(string(b), v) {
				t.Errorf("PHI %q exported in %s's traces", v, svc)
			}
		}
	}
}

// isChangeTrace: a round triggered by the catalog that built the mesh
// with both services and pushed to both proxies, each push ACKed.
func isChangeTrace(tr *jaegertest.Trace) bool {
	var root, twoServices bool
	acked := map[string]bool{}
	for i := range tr.Spans {
		s := &tr.Spans[i]
		switch s.OperationName {
		case "medmesh.config_change":
			root = strings.Contains(s.Tag("medmesh.trigger"), "catalog")
		case "ir.build":
			twoServices = s.Tag("medmesh.services") == "2"
		case "xds.push":
			if s.Tag(cpxds.AttrOutcome) == "ack" {
				acked[s.Tag(cpxds.AttrProxyID)] = true
			}
		}
	}
	return root && twoServices && acked["emr-1"] && acked["his-1"]
}

// isHealthTrace: a round triggered by the catalog after since
// (microseconds), that updated endpoints and pushed them, and nothing
// else, to his-1 alone, ACKed.
func isHealthTrace(tr *jaegertest.Trace, since int64) bool {
	var root, endpoints bool
	var pushes []*jaegertest.Span
	for i := range tr.Spans {
		s := &tr.Spans[i]
		switch s.OperationName {
		case "medmesh.config_change":
			root = strings.Contains(s.Tag("medmesh.trigger"), "catalog") && s.StartTime >= since
		case "xds.publish":
			endpoints = s.Tag("medmesh.xds.endpoint_sets_updated") == "1"
		case "xds.push":
			pushes = append(pushes, s)
		}
	}
	return root && endpoints && len(pushes) == 1 && pushes[0].Tag(cpxds.AttrProxyID) == "his-1" &&
		pushes[0].Tag("xds.types") == "EDS" && pushes[0].Tag(cpxds.AttrOutcome) == "ack"
}

func pollTrace(t *testing.T, ctx context.Context, j *jaegertest.Jaeger, id string, ok func(*jaegertest.Trace) error) *jaegertest.Trace {
	t.Helper()
	var tr *jaegertest.Trace
	eventuallyCtx(t, ctx, "trace "+id+" in Jaeger", func() error {
		var err error
		if tr, err = j.Trace(ctx, id); err != nil {
			return err
		}
		return ok(tr)
	})
	return tr
}

// eventuallyCtx polls f until it returns nil; Jaeger stores spans after
// the exporters' batches arrive, so there is nothing to wait on but the
// answer itself.
func eventuallyCtx(t *testing.T, ctx context.Context, what string, f func() error) {
	t.Helper()
	var err error
	for {
		if err = f(); err == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: not true before the test's deadline: %v", what, err)
		case <-time.After(100 * time.Millisecond): // polling interval, not synchronisation
		}
	}
}

func keysOf(m map[string]*jaegertest.Span) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
