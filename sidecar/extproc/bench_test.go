package extproc

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"medmesh/sidecar/audit"
	"medmesh/sidecar/phi"
	"medmesh/sidecar/sched"
)

// memStream is one ext_proc stream without gRPC: the messages Envoy
// sends, and the answers counted, so a benchmark sees the handler's own
// cost (allocations included) apart from the transport's.
type memStream struct {
	grpc.ServerStream
	ctx  context.Context
	in   []*extprocv3.ProcessingRequest
	sent int
}

func (m *memStream) Context() context.Context { return m.ctx }

func (m *memStream) Recv() (*extprocv3.ProcessingRequest, error) {
	if len(m.in) == 0 {
		return nil, io.EOF
	}
	r := m.in[0]
	m.in = m.in[1:]
	return r, nil
}

// SendMsg is what the server sends answers encoded once through.
func (m *memStream) SendMsg(v any) error {
	if _, ok := v.(*encoded); !ok {
		return fmt.Errorf("SendMsg of %T", v)
	}
	m.sent++
	return nil
}

func (m *memStream) Send(r *extprocv3.ProcessingResponse) error {
	// Marshalled as gRPC would: the answer's encoding is part of the cost.
	if _, err := proto.Marshal(r); err != nil {
		return err
	}
	m.sent++
	return nil
}

var benchPaths = []string{
	"/vitals/alerts/cardiac_arrest_alert",
	"/fhir/Patient/123",
	"/dicomweb/studies/1.2/series/3.4/instances/5.6",
	"/api/records/1",
	"/devices/d1/device_status",
}

func benchRequests(path string) []*extprocv3.ProcessingRequest {
	return []*extprocv3.ProcessingRequest{
		reqHeaders("spiffe://medmesh.local/ns/default/svc/his", ":method", "GET", ":path", path, ":authority", "emr",
			"accept", "application/json", "user-agent", "bench", "x-request-id", "0b7c6a2e-1f3d-4c5b-9a8e-2d4f6b8c0e1a"),
		{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{Headers: headers(":status", "200")}}},
	}
}

// BenchmarkProcess is the handler's work per request as `medmesh sidecar`
// runs it (metrics registered, audit recorder on, no tracer exporter),
// without the gRPC transport: what the extension adds to every exchange.
func BenchmarkProcess(b *testing.B) {
	eng := phi.New(phi.Options{Scheduler: sched.New(sched.Config{}), Service: "emr",
		Metrics: phi.NewMetrics(prometheus.NewRegistry()), Audit: discard{}})
	s := New(eng, nil)
	s.encoded = true // as NewGRPCServer sets it
	reqs := make([][]*extprocv3.ProcessingRequest, len(benchPaths))
	for i, p := range benchPaths {
		reqs[i] = benchRequests(p)
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		m := &memStream{ctx: ctx, in: reqs[i%len(reqs)]}
		if err := s.Process(m); err != nil {
			b.Fatal(err)
		}
		if m.sent != 2 {
			b.Fatalf("%d answers, want 2", m.sent)
		}
	}
}

// BenchmarkProcessTraceparent is BenchmarkProcess for requests carrying
// a W3C traceparent (a traced caller, or an Envoy that traces): "off" is
// the sidecar exporting nothing (the context is not read), "on" one with
// a recording tracer (the admission span joins the request's trace; the
// spans are dropped, their export is the SDK's cost).
func BenchmarkProcessTraceparent(b *testing.B) {
	prev := otel.GetTextMapPropagator()
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	b.Cleanup(func() { otel.SetTextMapPropagator(prev) })
	reqs := make([][]*extprocv3.ProcessingRequest, len(benchPaths))
	for i, p := range benchPaths {
		reqs[i] = benchRequests(p)
		h := reqs[i][0].GetRequestHeaders().GetHeaders()
		h.Headers = append(h.Headers, &corev3.HeaderValue{Key: "traceparent",
			RawValue: []byte("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")})
	}
	for _, tc := range []struct {
		name   string
		tracer trace.Tracer
	}{{"off", nil}, {"on", sdktrace.NewTracerProvider().Tracer("bench")}} {
		b.Run(tc.name, func(b *testing.B) {
			eng := phi.New(phi.Options{Scheduler: sched.New(sched.Config{}), Service: "emr",
				Metrics: phi.NewMetrics(prometheus.NewRegistry()), Audit: discard{}, Tracer: tc.tracer})
			s := New(eng, nil)
			s.encoded = true
			ctx := context.Background()
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				m := &memStream{ctx: ctx, in: reqs[i%len(reqs)]}
				if err := s.Process(m); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// discard is an audit sink that keeps nothing (the trail's own cost is
// sidecar/audit's benchmark).
type discard struct{}

func (discard) Record(audit.Event) error { return nil }

// BenchmarkExchange is one whole ext_proc exchange over loopback gRPC
// (request headers, answer, response headers, answer), client and server
// in this process: the sidecar's server, and a do-nothing one beside it.
func BenchmarkExchange(b *testing.B) {
	for _, name := range []string{"sidecar", "echo"} {
		b.Run(name, func(b *testing.B) {
			var g *grpc.Server
			if name == "sidecar" {
				eng := phi.New(phi.Options{Scheduler: sched.New(sched.Config{}), Service: "emr",
					Metrics: phi.NewMetrics(prometheus.NewRegistry()), Audit: discard{}})
				g, _ = NewGRPCServer(New(eng, nil))
			} else {
				g = grpc.NewServer()
				extprocv3.RegisterExternalProcessorServer(g, echo{})
			}
			lis, err := Listen("127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			go g.Serve(lis)
			defer g.Stop()
			conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				b.Fatal(err)
			}
			defer conn.Close()
			c := extprocv3.NewExternalProcessorClient(conn)
			reqs := benchRequests(benchPaths[0])
			b.ReportAllocs()
			r0, w0 := syscalls()
			c0 := cpuTime()
			defer func() {
				r1, w1 := syscalls()
				b.ReportMetric(float64(r1-r0)/float64(b.N), "reads/op")
				b.ReportMetric(float64(w1-w0)/float64(b.N), "writes/op")
				// CPU time, unlike wall time, is little affected by other
				// tenants of the machine.
				b.ReportMetric(float64((cpuTime()-c0).Nanoseconds())/float64(b.N), "cpu-ns/op")
			}()
			for b.Loop() {
				s, err := c.Process(context.Background())
				if err != nil {
					b.Fatal(err)
				}
				for _, r := range reqs {
					if err := s.Send(r); err != nil {
						b.Fatal(err)
					}
					if _, err := s.Recv(); err != nil {
						b.Fatal(err)
					}
				}
				s.CloseSend()
			}
		})
	}
}

type echo struct {
	extprocv3.UnimplementedExternalProcessorServer
}

func (echo) Process(s extprocv3.ExternalProcessor_ProcessServer) error {
	for {
		if _, err := s.Recv(); err != nil {
			return nil
		}
		if err := s.Send(&extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestHeaders{
			RequestHeaders: &extprocv3.HeadersResponse{}}}); err != nil {
			return err
		}
	}
}

// syscalls returns this process's read and write system calls so far
// (/proc/self/io): unlike time, a count the machine's load cannot skew.
func syscalls() (r, w int) {
	b, _ := os.ReadFile("/proc/self/io")
	for _, l := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(l, ": ")
		n, _ := strconv.Atoi(v)
		switch k {
		case "syscr":
			r = n
		case "syscw":
			w = n
		}
	}
	return r, w
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
