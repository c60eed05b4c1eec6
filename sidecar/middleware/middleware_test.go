package middleware

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"medmesh/internal/fetchrpc"
	"medmesh/sidecar/audit/audittest"
	"medmesh/sidecar/classify"
	"medmesh/sidecar/phi"
	"medmesh/sidecar/sched"
)

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

func engine(cfg sched.Config) (*phi.Engine, *sched.Scheduler, *audittest.Recorder) {
	s := sched.New(cfg)
	a := &audittest.Recorder{}
	return phi.New(phi.Options{Scheduler: s, Audit: a, Service: "emr"}), s, a
}

func TestHTTPMiddleware(t *testing.T) {
	e, s, aud := engine(sched.Config{Limit: 1, QueueBound: [classify.NumPriorities]int{1, 1, 1, 1, 1}})
	release := make(chan struct{})
	seen := make(chan http.Header, 10)
	h := HTTP(e, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Clone()
		if r.URL.Path == "/api/records/slow" {
			<-release
		}
		io.WriteString(w, "ok")
	}))
	srv := httptest.NewServer(h)
	defer srv.Close()

	get := func(ctx context.Context, path string, hdr ...string) (*http.Response, error) {
		req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+path, nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Add(hdr[i], hdr[i+1])
		}
		return http.DefaultClient.Do(req)
	}
	// Tags replace what the caller sent.
	resp, err := get(context.Background(), "/fhir/Patient/1", "Accept", "application/fhir+json", "X-Medmesh-Phi", "false", "X-Medmesh-Class", "a", "X-Medmesh-Class", "b")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("%v %v", resp, err)
	}
	resp.Body.Close()
	got := <-seen
	if got.Get("X-Medmesh-Phi") != "true" || len(got.Values("X-Medmesh-Class")) != 1 || got.Get("X-Medmesh-Class") != "fhir.Patient" || got.Get("X-Medmesh-Priority") != "low" {
		t.Errorf("handler saw tags %v", got)
	}

	// One slow request holds the slot; one queues; the next is refused.
	slow := make(chan int, 1)
	go func() {
		resp, err := get(context.Background(), "/api/records/slow")
		if err != nil {
			slow <- 0
			return
		}
		resp.Body.Close()
		slow <- resp.StatusCode
	}()
	<-seen
	qctx, qcancel := context.WithCancel(context.Background())
	queued := make(chan error, 1)
	go func() {
		resp, err := get(qctx, "/api/records/2")
		if err == nil {
			resp.Body.Close()
		}
		queued <- err
	}()
	waitFor(t, "queued", func() bool { return s.Stats()["emr"].Queued[classify.Low] == 1 })
	resp, err = get(context.Background(), "/api/records/3")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" || resp.Header.Get("X-Medmesh-Priority") != "low" {
		t.Errorf("refusal: %d %v", resp.StatusCode, resp.Header)
	}
	// The queued caller gives up: it leaves the queue.
	qcancel()
	<-queued
	waitFor(t, "queue empty", func() bool { return s.Stats()["emr"].Queued[classify.Low] == 0 })
	close(release)
	if code := <-slow; code != 200 {
		t.Fatalf("slow request: %d", code)
	}
	waitFor(t, "slots free", func() bool { return s.Stats()["emr"].Inflight == 0 })
	if len(aud.All()) < 3 {
		t.Errorf("%d audit records, want the PHI requests", len(aud.All()))
	}
}

func startGRPC(t *testing.T, e *phi.Engine, c *fetchrpc.Server) *grpc.ClientConn {
	t.Helper()
	g := grpc.NewServer(grpc.UnaryInterceptor(UnaryServerInterceptor(e)), grpc.StreamInterceptor(StreamServerInterceptor(e)))
	fetcher.Register(g, c)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(g, hs)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func TestGRPCInterceptors(t *testing.T) {
	e, s, _ := engine(sched.Config{Limit: 1, QueueBound: [classify.NumPriorities]int{1, 1, 1, 1, 1}})
	release := make(chan struct{})
	entered := make(chan metadata.MD, 10)
	conn := startGRPC(t, e, &fetchrpc.Server{Instance: "emr-1", Handle: func(ctx context.Context, kind string) error {
		md, _ := metadata.FromIncomingContext(ctx)
		entered <- md
		if kind == "slow" {
			<-release
		}
		return nil
	}})
	ctx := metadata.AppendToOutgoingContext(context.Background(), "x-medmesh-priority", "critical", "x-medmesh-phi", "true")
	if _, err := fetcher.Fetch(ctx, conn, "Patient"); err != nil {
		t.Fatal(err)
	}
	md := <-entered
	// Unknown traffic is medium; asking for critical does not raise it.
	if md.Get("x-medmesh-priority")[0] != "medium" || md.Get("x-medmesh-phi")[0] != "false" || len(md.Get("x-medmesh-phi")) != 1 {
		t.Errorf("handler metadata %v", md)
	}

	done := make(chan error, 1)
	go func() { _, err := fetcher.Fetch(context.Background(), conn, "slow"); done <- err }()
	<-entered
	go fetcher.Fetch(context.Background(), conn, "queued")
	waitFor(t, "queued", func() bool { return s.Stats()["emr"].Queued[classify.Medium] == 1 })
	var trailer metadata.MD
	_, err := fetcher.Fetch(context.Background(), conn, "refused", grpc.Trailer(&trailer))
	if status.Code(err) != codes.Unavailable || len(trailer.Get("retry-after")) != 1 {
		t.Errorf("refusal: %v trailer %v", err, trailer)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	<-entered // the queued call ran
	waitFor(t, "slots free", func() bool { st := s.Stats()["emr"]; return st.Inflight == 0 && st.Queued[classify.Medium] == 0 })

	// A server stream frees its slot when the first response is sent,
	// not when the stream ends.
	wctx, wcancel := context.WithCancel(context.Background())
	defer wcancel()
	w, err := healthpb.NewHealthClient(conn).Watch(wctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Recv(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "stream slot freed while the stream is open", func() bool { return s.Stats()["emr"].Inflight == 0 })
	if _, err := fetcher.Fetch(context.Background(), conn, "after"); err != nil {
		t.Fatalf("a call after the stream started: %v", err)
	}
	<-entered
}

// fetcher is the gRPC service the interceptor tests call: one method that
// no classifier rule names (medium priority, not PHI).
var fetcher = fetchrpc.New("medmesh.test.Fetcher")
