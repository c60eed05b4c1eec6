package phi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/grpclog"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"

	"medmesh/internal/auditlog"
	"medmesh/internal/fetchrpc"
	"medmesh/sidecar/audit"
	"medmesh/sidecar/classify"
	"medmesh/sidecar/extproc"
	"medmesh/sidecar/middleware"
	"medmesh/sidecar/phi"
	"medmesh/sidecar/sched"
)

type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}
func (l *lockedBuf) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

// grpcLogs captures grpc-go's own logging for the whole test binary.
var grpcLogs = &lockedBuf{}

func init() { grpclog.SetLoggerV2(grpclog.NewLoggerV2WithVerbosity(grpcLogs, grpcLogs, grpcLogs, 99)) }

// The PHI this test feeds in. None of it may come out anywhere.
var phiValues = []string{"MRN-7731", "Quincy", "1961-04-12", "STUDY-88.1.2.3", "jq-session-cookie"}

// TestNoPHIInLogsAuditSpansOrMetrics drives the ext_proc server and the
// HTTP and gRPC middleware with requests full of PHI (in paths, query
// strings, headers, metadata), admitted, queued, refused and cancelled,
// then reads every log line, audit record, span and metric produced.
func TestNoPHIInLogsAuditSpansOrMetrics(t *testing.T) {
	logs := &lockedBuf{}
	logger := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	spans := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))
	reg := prometheus.NewRegistry()
	auditPath := filepath.Join(t.TempDir(), "audit.log")
	al, err := audit.Open(audit.Options{Options: auditlog.Options{Path: auditPath, MaxBytes: 4096}, Key: []byte("0123456789abcdef0123456789abcdef")})
	if err != nil {
		t.Fatal(err)
	}
	s := sched.New(sched.Config{Limit: 1, QueueBound: [classify.NumPriorities]int{2, 2, 2, 1, 1}})
	eng := phi.New(phi.Options{Scheduler: s, Audit: al, Logger: logger, Metrics: phi.NewMetrics(reg),
		Tracer: tp.Tracer("test"), Service: "emr", Identity: "spiffe://medmesh.local/ns/default/svc/emr"})

	// ext_proc over a real gRPC connection.
	srv := extproc.New(eng, logger)
	g, _ := extproc.NewGRPCServer(srv)
	lis, _ := net.Listen("tcp", "127.0.0.1:0")
	go g.Serve(lis)
	defer g.Stop()
	conn, _ := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	defer conn.Close()
	client := extprocv3.NewExternalProcessorClient(conn)
	var replies []string
	hv := func(kv ...string) *corev3.HeaderMap {
		m := &corev3.HeaderMap{}
		for i := 0; i+1 < len(kv); i += 2 {
			m.Headers = append(m.Headers, &corev3.HeaderValue{Key: kv[i], RawValue: []byte(kv[i+1])})
		}
		return m
	}
	open := func(path string, extra ...string) extprocv3.ExternalProcessor_ProcessClient {
		st, err := client.Process(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		kv := append([]string{":method", "GET", ":path", path, "x-patient-name", "Jane Quincy Doe", "cookie", "sid=jq-session-cookie",
			"x-dob", "1961-04-12", "x-request-id", "MRN-7731-as-request-id"}, extra...)
		st.Send(&extprocv3.ProcessingRequest{
			Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{Headers: hv(kv...)}},
			Attributes: map[string]*structpb.Struct{extproc.AttrNamespace: {Fields: map[string]*structpb.Value{
				extproc.AttrPeerURI: structpb.NewStringValue("spiffe://medmesh.local/ns/default/svc/his")}}},
		})
		return st
	}
	recv := func(st extprocv3.ExternalProcessor_ProcessClient) {
		r, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		b, _ := protojson.Marshal(r)
		replies = append(replies, string(b))
	}
	// Admitted and completed.
	a := open("/fhir/Patient/MRN-7731/$everything", "accept", "application/fhir+json")
	recv(a)
	a.Send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{Headers: hv(":status", "200")}}})
	recv(a)
	a.CloseSend()
	// One holds the slot, one queues and is cancelled, one is refused.
	hold := open("/dicomweb/studies/STUDY-88.1.2.3?PatientID=MRN-7731&PatientName=Quincy")
	recv(hold)
	qctx, qcancel := context.WithCancel(context.Background())
	q, _ := client.Process(qctx)
	q.Send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{
		Headers: hv(":method", "GET", ":path", "/api/records/MRN-7731?name=Quincy")}}})
	waitFor(t, func() bool { return s.Stats()["emr"].Queued[classify.Low] == 1 })
	refused := open("/api/records/MRN-7731?dob=1961-04-12")
	recv(refused)
	qcancel()
	waitFor(t, func() bool { return s.Stats()["emr"].Queued[classify.Low] == 0 })
	// A protocol error and a malformed path.
	bad := open("/fhir/Patient/MRN-7731%zz?patient=%%Quincy")
	recv(bad)
	bad.Send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{Headers: hv(":path", "/MRN-7731")}}})
	bad.Recv()
	hold.CloseSend()
	waitFor(t, func() bool { return s.Stats()["emr"].Inflight == 0 })

	// HTTP middleware.
	hs := httptest.NewServer(middleware.HTTP(eng, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNotFound)
	})))
	defer hs.Close()
	req, _ := http.NewRequest("GET", hs.URL+"/fhir/Observation?patient=MRN-7731&name=Quincy", nil)
	req.Header.Set("X-Patient-Name", "Quincy")
	if resp, err := http.DefaultClient.Do(req); err == nil {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}

	// gRPC middleware.
	gs := grpc.NewServer(grpc.UnaryInterceptor(middleware.UnaryServerInterceptor(eng)))
	fetcher.Register(gs, &fetchrpc.Server{Instance: "emr-1"})
	glis, _ := net.Listen("tcp", "127.0.0.1:0")
	go gs.Serve(glis)
	defer gs.Stop()
	gconn, _ := grpc.NewClient(glis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	defer gconn.Close()
	ctx := metadata.AppendToOutgoingContext(context.Background(), "x-patient-id", "MRN-7731", "x-patient-name", "Quincy")
	if _, err := fetcher.Fetch(ctx, gconn, "Patient/MRN-7731"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return s.Stats()["emr"].Inflight == 0 })
	if err := al.Close(); err != nil {
		t.Fatal(err)
	}

	// Collect everything that was produced.
	var auditText strings.Builder
	files, _ := filepath.Glob(auditPath + "*")
	for _, f := range files {
		b, _ := os.ReadFile(f)
		auditText.Write(b)
	}
	spanJSON, _ := json.Marshal(spans.GetSpans())
	mfs, _ := reg.Gather()
	var metricsText bytes.Buffer
	for _, mf := range mfs {
		expfmt.MetricFamilyToText(&metricsText, mf)
	}
	outputs := map[string]string{
		"logs": logs.String(), "grpc logs": grpcLogs.String(), "audit": auditText.String(),
		"spans": string(spanJSON), "metrics": metricsText.String(), "ext_proc replies": strings.Join(replies, "\n"),
	}
	// The test must be able to fail: each output holds real content.
	for name, want := range map[string]string{
		"audit":   audit.HashPatient([]byte("0123456789abcdef0123456789abcdef"), "Patient/MRN-7731"),
		"spans":   "medmesh.priority",
		"metrics": "medmesh_sidecar_requests_total",
		"logs":    "request shed",
	} {
		if !strings.Contains(outputs[name], want) {
			t.Errorf("%s lacks %q: the test would not see a leak there", name, want)
		}
	}
	for name, out := range outputs {
		for _, v := range phiValues {
			if i := strings.Index(out, v); i >= 0 {
				t.Errorf("PHI value %q found in %s: ...%s...", v, name, out[max(0, i-80):min(len(out), i+40)])
			}
		}
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		time.Sleep(time.Millisecond) // polling interval, not synchronisation
	}
}

// fetcher is the gRPC service the leak test calls through the interceptors.
var fetcher = fetchrpc.New("medmesh.test.Fetcher")
