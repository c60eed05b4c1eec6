package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"medmesh/internal/jaegertest"
	"medmesh/sidecar/extproc"
	"medmesh/sidecar/phi"
	"medmesh/sidecar/sched"
)

// TestExtProcTraceInJaeger runs a real Jaeger and the PHI extension
// (medmesh sidecar's ext_proc server on a real gRPC socket) exporting
// over OTLP as the standard OTEL_* variables configure it, and plays
// Envoy (no Envoy binary here): a caller's span's W3C traceparent in the
// request headers, then, for a second request, only in the ext_proc
// stream's metadata (where Envoy's gRPC client puts its span). Jaeger
// must show each caller span and the extension's medmesh.sidecar.admit
// span in one trace, the admission span its child, and none of the PHI
// the request carried.
func TestExtProcTraceInJaeger(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	j, provider := startJaeger(ctx, t, "ward-a")
	callerTP, sidecarTP := provider("his", "his-1"), provider("medmesh-sidecar", "emr-1")
	// The propagator is global in a process, as `medmesh sidecar` sets it.
	prev := otel.GetTextMapPropagator()
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	t.Cleanup(func() { otel.SetTextMapPropagator(prev) })

	eng := phi.New(phi.Options{Scheduler: sched.New(sched.Config{Limit: 8}), Service: "emr",
		Tracer: sidecarTP.Tracer("medmesh/sidecar")})
	g, _ := extproc.NewGRPCServer(extproc.New(eng, nil))
	lis, err := extproc.Listen(fmt.Sprintf("127.0.0.1:%d", freePort(t)))
	if err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(ctx)
	served := make(chan struct{})
	go func() { extproc.Serve(sctx, g, lis, time.Second); close(served) }()
	defer func() { stop(); <-served }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := extprocv3.NewExternalProcessorClient(conn)

	for _, inHeaders := range []bool{true, false} {
		callCtx, span := callerTP.Tracer("his").Start(ctx, "his.admission-lookup")
		tc := propagation.MapCarrier{}
		propagation.TraceContext{}.Inject(callCtx, tc)
		hm := &corev3.HeaderMap{}
		for k, v := range map[string]string{":method": "GET", ":path": "/fhir/Patient/MRN-7731",
			"x-patient-name": "Jane Quincy Doe", "x-dob": "1961-04-12", "baggage": "patient=MRN-7731"} {
			hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: k, RawValue: []byte(v)})
		}
		streamCtx := ctx
		if inHeaders {
			hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: "traceparent", RawValue: []byte(tc["traceparent"])})
		} else {
			streamCtx = metadata.AppendToOutgoingContext(ctx, "traceparent", tc["traceparent"])
		}
		s, err := client.Process(streamCtx)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range []*extprocv3.ProcessingRequest{
			{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{Headers: hm, EndOfStream: true}}},
			{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{
				Headers: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{{Key: ":status", RawValue: []byte("200")}}}}}},
		} {
			if err := s.Send(r); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Recv(); err != nil {
				t.Fatal(err)
			}
		}
		_ = s.CloseSend()
		span.End()

		id := span.SpanContext().TraceID().String()
		tr := pollTrace(t, ctx, j, id, func(tr *jaegertest.Trace) error {
			if len(tr.Spans) < 2 {
				return fmt.Errorf("%d spans so far", len(tr.Spans))
			}
			return nil
		})
		var caller, admit *jaegertest.Span
		for i := range tr.Spans {
			switch s := &tr.Spans[i]; tr.Service(s) + " " + s.OperationName {
			case "his his.admission-lookup":
				caller = s
			case "medmesh-sidecar medmesh.sidecar.admit":
				admit = s
			}
		}
		if caller == nil || admit == nil {
			t.Fatalf("trace %s (context in headers: %t) lacks the caller's or the extension's span", id, inHeaders)
		}
		parent := ""
		for _, r := range admit.References {
			if r.RefType == "CHILD_OF" {
				parent = r.SpanID
			}
		}
		if parent != caller.SpanID {
			t.Errorf("context in headers %t: admission span's parent %q, want the caller's span %s", inHeaders, parent, caller.SpanID)
		}
		b, _ := json.Marshal(tr)
		for _, v := range tracePHI {
			if strings.Contains(string(b), v) {
				t.Errorf("PHI %q exported in trace %s", v, id)
			}
		}
		t.Logf("context in headers %t: trace %s holds %s's span and the extension's, its child", inHeaders, id, tr.Service(caller))
	}
}
