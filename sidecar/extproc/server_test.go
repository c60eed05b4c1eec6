package extproc

import (
	"context"
	"errors"
	"io"
	"runtime"
	"strconv"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"medmesh/sidecar/audit/audittest"
	"medmesh/sidecar/classify"
	"medmesh/sidecar/phi"
	"medmesh/sidecar/sched"
)

type harness struct {
	client extprocv3.ExternalProcessorClient
	sched  *sched.Scheduler
	audit  *audittest.Recorder
	server *Server
}

// start serves the ext_proc API on a real loopback TCP connection and
// returns go-control-plane's generated client, which is what Envoy's
// protocol looks like on the wire.
func start(t *testing.T, cfg sched.Config, rules *classify.Config) *harness {
	t.Helper()
	h := &harness{sched: sched.New(cfg), audit: &audittest.Recorder{}}
	r := phi.NewRules()
	if rules != nil {
		r.Set(rules)
	}
	h.serve(t, phi.New(phi.Options{Rules: r, Scheduler: h.sched, Audit: h.audit, Service: "emr",
		Identity: "spiffe://medmesh.local/ns/default/svc/emr"}))
	return h
}

// serve serves eng's ext_proc API on loopback and connects h.client.
func (h *harness) serve(t *testing.T, eng *phi.Engine) {
	t.Helper()
	h.server = New(eng, nil)
	g, _ := NewGRPCServer(h.server)
	lis, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { Serve(ctx, g, lis, time.Second); close(done) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(); cancel(); <-done })
	h.client = extprocv3.NewExternalProcessorClient(conn)
}

func headers(kv ...string) *corev3.HeaderMap {
	m := &corev3.HeaderMap{}
	for i := 0; i+1 < len(kv); i += 2 {
		m.Headers = append(m.Headers, &corev3.HeaderValue{Key: kv[i], RawValue: []byte(kv[i+1])})
	}
	return m
}

func reqHeaders(caller string, kv ...string) *extprocv3.ProcessingRequest {
	r := &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{
		RequestHeaders: &extprocv3.HttpHeaders{Headers: headers(kv...), EndOfStream: true}}}
	if caller != "" {
		r.Attributes = map[string]*structpb.Struct{AttrNamespace: {Fields: map[string]*structpb.Value{
			AttrPeerURI: structpb.NewStringValue(caller),
			AttrSource:  structpb.NewStringValue("10.1.2.3:41000"),
		}}}
	}
	return r
}

func respHeaders(code string) *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{
		ResponseHeaders: &extprocv3.HttpHeaders{Headers: headers(":status", code)}}}
}

func (h *harness) open(t *testing.T, ctx context.Context) extprocv3.ExternalProcessor_ProcessClient {
	t.Helper()
	s, err := h.client.Process(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func send(t *testing.T, s extprocv3.ExternalProcessor_ProcessClient, r *extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
	t.Helper()
	if err := s.Send(r); err != nil {
		t.Fatal(err)
	}
	resp, err := s.Recv()
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func setHeaders(m *extprocv3.HeaderMutation) map[string]string {
	out := map[string]string{}
	for _, o := range m.GetSetHeaders() {
		if o.GetAppendAction() != corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD {
			out["!append:"+o.GetHeader().GetKey()] = "bad"
		}
		out[o.GetHeader().GetKey()] = string(o.GetHeader().GetRawValue())
	}
	return out
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond) // polling interval, not synchronisation
	}
}

func (h *harness) idle(t *testing.T) {
	t.Helper()
	waitFor(t, "all slots free and queues empty", func() bool {
		st := h.sched.Stats()["emr"]
		return st.Inflight == 0 && st.Queued == [classify.NumPriorities]int{}
	})
}

const caller = "spiffe://medmesh.local/ns/default/svc/his"

func TestRequestResponseAndStreamEnd(t *testing.T) {
	h := start(t, sched.Config{Limit: 4}, nil)
	s := h.open(t, context.Background())
	resp := send(t, s, reqHeaders(caller,
		":method", "GET", ":path", "/fhir/Patient/MRN-0042", "accept", "application/fhir+json",
		"x-medmesh-phi", "false", "x-medmesh-class", "spoofed", "x-request-id", "0b7c6a2e-1f3d-4c5b-9a8e-2d4f6b8c0e1a"))
	rh := resp.GetRequestHeaders()
	if rh == nil {
		t.Fatalf("want a request_headers response, got %v", resp)
	}
	got := setHeaders(rh.GetResponse().GetHeaderMutation())
	want := map[string]string{"x-medmesh-phi": "true", "x-medmesh-priority": "low", "x-medmesh-class": "fhir.Patient"}
	if len(got) != len(want) {
		t.Fatalf("header mutation %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q (inbound values must be replaced)", k, got[k], v)
		}
	}
	md := resp.GetDynamicMetadata().GetFields()[phi.MetadataNamespace].GetStructValue().GetFields()
	if md["phi"].GetBoolValue() != true || md["priority"].GetStringValue() != "low" || md["class"].GetStringValue() != "fhir.Patient" || md["rule"].GetStringValue() != "fhir.read" {
		t.Errorf("dynamic metadata %v", md)
	}
	if st := h.sched.Stats()["emr"]; st.Inflight != 1 {
		t.Fatalf("inflight %d while the request is upstream, want 1", st.Inflight)
	}
	if resp := send(t, s, respHeaders("200")); resp.GetResponseHeaders() == nil {
		t.Fatalf("want a response_headers response, got %v", resp)
	}
	h.idle(t) // the slot is released on response headers
	s.CloseSend()
	if _, err := s.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("stream end: %v", err)
	}
	waitFor(t, "audit record", func() bool { return len(h.audit.All()) == 1 })
	e := h.audit.All()[0]
	if e.Status != 200 || e.Source != caller || e.SourceAddress != "10.1.2.3" || e.Class != "fhir.Patient" ||
		e.Patient.Reveal() != "Patient/MRN-0042" || e.RequestID != "0b7c6a2e-1f3d-4c5b-9a8e-2d4f6b8c0e1a" || e.Method != "GET" {
		t.Errorf("audit event %+v", e)
	}

	// A stream that ends after admission without response headers (the
	// downstream reset) still frees its slot and is audited as such.
	s2 := h.open(t, context.Background())
	send(t, s2, reqHeaders(caller, ":method", "GET", ":path", "/fhir/Observation?patient=p1"))
	s2.CloseSend()
	if _, err := s2.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("stream end: %v", err)
	}
	h.idle(t)
	waitFor(t, "second audit record", func() bool { return len(h.audit.All()) == 2 })
	if e := h.audit.All()[1]; e.Status != 0 || e.Reason == "" {
		t.Errorf("unfinished request audited as %+v", e)
	}
}

// Stream workers (NewGRPCServer) must never make a request wait for a
// worker: Envoy holds a stream per in-flight request, and queued ones
// hold theirs for seconds. With every worker held by an admitted
// request and more requests queued behind them than there are workers,
// each queued request is answered as soon as a slot frees.
func TestStreamsBeyondWorkersAreAnswered(t *testing.T) {
	workers := runtime.GOMAXPROCS(0) // NewGRPCServer: the limit, at least this
	h := start(t, sched.Config{Limit: workers}, nil)
	ctx := context.Background()
	var held []extprocv3.ExternalProcessor_ProcessClient
	for i := range workers {
		s := h.open(t, ctx)
		if r := send(t, s, reqHeaders(caller, ":method", "GET", ":path", "/api/records/"+strconv.Itoa(i))); r.GetRequestHeaders() == nil {
			t.Fatalf("held request %d: %v", i, r)
		}
		held = append(held, s)
	}
	var queued []extprocv3.ExternalProcessor_ProcessClient
	for i := range 2 * workers {
		s := h.open(t, ctx)
		if err := s.Send(reqHeaders(caller, ":method", "GET", ":path", "/api/records/q"+strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
		queued = append(queued, s)
		// One at a time, so the queue's order is this order (their
		// handlers run concurrently).
		waitFor(t, "request queued", func() bool { return h.sched.Stats()["emr"].Queued[classify.Low] == len(queued) })
	}
	// Each finished request lets the oldest queued one in, which is
	// answered on its own stream and then finishes in turn.
	for _, s := range held {
		send(t, s, respHeaders("200"))
		s.CloseSend()
	}
	for i, s := range queued {
		r, err := s.Recv()
		if err != nil || r.GetRequestHeaders() == nil {
			t.Fatalf("queued request %d: %v %v", i, r, err)
		}
		send(t, s, respHeaders("200"))
		s.CloseSend()
	}
	h.idle(t)
}

func TestCallerCannotRaisePriority(t *testing.T) {
	cfg := &classify.Config{Callers: classify.CallerPolicy{Default: classify.Low, Entries: []classify.CallerEntry{
		{ID: "spiffe://medmesh.local/ns/icu/svc/monitor", Max: classify.Critical},
		{ID: caller, Max: classify.High},
	}}}
	h := start(t, sched.Config{}, cfg)
	cases := []struct{ who, asked, want string }{
		{"spiffe://medmesh.local/ns/icu/svc/monitor", "", "critical"},
		{"spiffe://medmesh.local/ns/icu/svc/monitor", "background", "background"}, // lowering is allowed
		{caller, "", "high"},         // capped by identity
		{caller, "critical", "high"}, // asking for more changes nothing
		{"", "critical", "low"},      // no identity: the default cap
		{"spiffe://other/ns/x/svc/y", "nonsense", "low"},
	}
	for _, tc := range cases {
		s := h.open(t, context.Background())
		kv := []string{":method", "POST", ":path", "/vitals/alerts/cardiac_arrest_alert"}
		if tc.asked != "" {
			kv = append(kv, "x-medmesh-priority", tc.asked)
		}
		resp := send(t, s, reqHeaders(tc.who, kv...))
		if got := setHeaders(resp.GetRequestHeaders().GetResponse().GetHeaderMutation())["x-medmesh-priority"]; got != tc.want {
			t.Errorf("caller %q asking %q: priority %q, want %q", tc.who, tc.asked, got, tc.want)
		}
		send(t, s, respHeaders("204"))
		s.CloseSend()
	}
	h.idle(t)
}

func TestShedCancelAndOutOfOrder(t *testing.T) {
	bounds := [classify.NumPriorities]int{4, 4, 4, 1, 1}
	h := start(t, sched.Config{Limit: 1, QueueBound: bounds}, nil)
	ctx := context.Background()

	// Out of order: response headers before request headers get a no-op
	// answer, not a crash or a hang.
	s0 := h.open(t, ctx)
	if r := send(t, s0, respHeaders("200")); r.GetResponseHeaders() == nil {
		t.Fatalf("out-of-order response headers: %v", r)
	}
	if r := send(t, s0, &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{Body: []byte("x")}}}); r.GetRequestBody() == nil {
		t.Fatalf("unrequested body: %v", r)
	}
	if h.server.ProtocolErrors.Load() != 1 {
		t.Errorf("protocol errors %d, want 1", h.server.ProtocolErrors.Load())
	}
	s0.CloseSend()

	// A holds the only slot.
	a := h.open(t, ctx)
	send(t, a, reqHeaders(caller, ":method", "GET", ":path", "/api/records/1"))

	// B (low) queues; its stream gets no answer while queued.
	bctx, bcancel := context.WithCancel(ctx)
	b := h.open(t, bctx)
	if err := b.Send(reqHeaders(caller, ":method", "GET", ":path", "/api/records/2")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "B queued", func() bool { return h.sched.Stats()["emr"].Queued[classify.Low] == 1 })

	// C (low) finds the low queue full: 503 at once, with retry-after,
	// tags and details; the service never sees it.
	c := h.open(t, ctx)
	r := send(t, c, reqHeaders(caller, ":method", "GET", ":path", "/api/records/3", "content-type", "application/json"))
	ir := r.GetImmediateResponse()
	if ir == nil || ir.GetStatus().GetCode() != typev3.StatusCode_ServiceUnavailable {
		t.Fatalf("want an immediate 503, got %v", r)
	}
	hdr := setHeaders(ir.GetHeaders())
	if hdr["retry-after"] == "" || hdr["x-medmesh-priority"] != "low" || ir.GetDetails() != "medmesh_shed_queue_full" || ir.GetGrpcStatus() != nil {
		t.Errorf("immediate response headers %v details %q grpc %v", hdr, ir.GetDetails(), ir.GetGrpcStatus())
	}
	if !r.GetDynamicMetadata().GetFields()[phi.MetadataNamespace].GetStructValue().GetFields()["shed"].GetBoolValue() {
		t.Error("shed not in dynamic metadata")
	}

	// A gRPC call shed gets a gRPC status too.
	g := h.open(t, ctx)
	r = send(t, g, reqHeaders(caller, ":method", "POST", ":path", "/api/records/4", "content-type", "application/grpc"))
	if r.GetImmediateResponse().GetGrpcStatus().GetStatus() != uint32(codes.Unavailable) {
		t.Errorf("gRPC shed: %v", r)
	}

	// Cancellation mid-queue: Envoy resets B's stream; B leaves the queue.
	bcancel()
	waitFor(t, "B removed from the queue", func() bool { return h.sched.Stats()["emr"].Queued[classify.Low] == 0 })

	// Duplicate request headers on A: an error, and A's slot is freed.
	if err := a.Send(reqHeaders(caller, ":method", "GET", ":path", "/api/records/1")); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Recv(); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("duplicate request headers: %v, want FailedPrecondition", err)
	}
	h.idle(t)

	// An empty message is refused.
	e := h.open(t, ctx)
	e.Send(&extprocv3.ProcessingRequest{})
	if _, err := e.Recv(); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("empty message: %v", err)
	}

	// Audit: records for A (no response), C and G (shed); B was
	// cancelled while queued. None of the streams leaked a slot.
	waitFor(t, "audit", func() bool { return len(h.audit.All()) >= 4 })
	var shed, cancelled int
	for _, ev := range h.audit.All() {
		if ev.Shed {
			shed++
		}
		if ev.Reason == "cancelled while queued" {
			cancelled++
		}
	}
	if shed != 2 || cancelled != 1 {
		t.Errorf("audit: %d shed, %d cancelled; want 2 and 1", shed, cancelled)
	}
	h.idle(t)
}

func TestHeadersParsing(t *testing.T) {
	m := headers("Content-Type", "application/fhir+json", "accept", "a", "ACCEPT", "b")
	m.Headers = append(m.Headers, &corev3.HeaderValue{Key: "x-old", Value: "plain"})
	got := Headers(m)
	if got["content-type"] != "application/fhir+json" || got["accept"] != "a,b" || got["x-old"] != "plain" {
		t.Fatalf("Headers = %v", got)
	}
	big := &corev3.HeaderMap{}
	for range 2000 {
		big.Headers = append(big.Headers, &corev3.HeaderValue{Key: "x", RawValue: make([]byte, 1024)})
	}
	if n := len(Headers(big)["x"]); n > maxHeaderBytes {
		t.Fatalf("header bytes not bounded: %d", n)
	}
	if Headers(nil) == nil {
		t.Fatal("nil map")
	}
}

// FuzzHeaders: arbitrary header maps never panic the parser or the
// classifier behind it.
func FuzzHeaders(f *testing.F) {
	f.Add(":path", "/fhir/Patient/1", ":method", "GET", "content-type", "application/fhir+json")
	f.Add(":path", "%", ":method", "", "", "")
	f.Add("ACCEPT", "a,,b;q=", ":PATH", "/studies?PatientID=%zz", "x-medmesh-priority", "CRITICAL")
	eng := phi.New(phi.Options{})
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2, k3, v3 string) {
		m := headers(k1, v1, k2, v2, k3, v3)
		req := &extprocv3.ProcessingRequest{}
		in := input(req, &extprocv3.HttpHeaders{Headers: m})
		d := eng.Decide(in)
		if !d.Priority.Valid() {
			t.Fatalf("invalid priority for %v", in)
		}
		for _, kv := range d.Tags() {
			if kv[1] == "" {
				t.Fatalf("empty tag %s", kv[0])
			}
		}
	})
}
