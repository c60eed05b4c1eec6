package main

import (
	"context"
	"net"
	"slices"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"medmesh/sidecar/classify"
	"medmesh/sidecar/extproc"
	"medmesh/sidecar/phi"
	"medmesh/sidecar/sched"
)

// echoProcessor answers every ext_proc message at once, doing nothing: the
// floor that gRPC, loopback and the Go runtime set on this machine for one
// ext_proc exchange, which no extension can go below. The extension's own
// cost is what it adds to this floor.
//
// With answer set, it answers request headers with that message instead of
// an empty one: the same floor, but Envoy's side (here the Go client)
// receives and decodes as much as from the sidecar. The difference between
// the two floors is the cost of the answer's size, not of the extension's
// work.
type echoProcessor struct {
	extprocv3.UnimplementedExternalProcessorServer
	answer *extprocv3.ProcessingResponse
}

func (e echoProcessor) Process(s extprocv3.ExternalProcessor_ProcessServer) error {
	for {
		req, err := s.Recv()
		if err != nil {
			return nil
		}
		resp := &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestHeaders{
			RequestHeaders: &extprocv3.HeadersResponse{}}}
		if e.answer != nil && req.GetRequestHeaders() != nil {
			resp = e.answer
		}
		if err := s.Send(resp); err != nil {
			return err
		}
	}
}

func newEchoServer(answer *extprocv3.ProcessingResponse) *grpc.Server {
	g := grpc.NewServer()
	extprocv3.RegisterExternalProcessorServer(g, echoProcessor{answer: answer})
	return g
}

// sidecarAnswer is what the sidecar answers to an admitted request of the
// bench's low-priority path: its tags as a header mutation and dynamic
// metadata (built with the sidecar's own Metadata).
func sidecarAnswer() *extprocv3.ProcessingResponse {
	d := phi.New(phi.Options{Service: "bench"}).Decide(phi.Input{Method: "GET", Path: paths[classify.Low]})
	m := &extprocv3.HeaderMutation{}
	for _, kv := range d.Tags() {
		m.SetHeaders = append(m.SetHeaders, &corev3.HeaderValueOption{
			Header:       &corev3.HeaderValue{Key: kv[0], RawValue: []byte(kv[1])},
			AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
		})
	}
	return &extprocv3.ProcessingResponse{
		Response: &extprocv3.ProcessingResponse_RequestHeaders{RequestHeaders: &extprocv3.HeadersResponse{
			Response: &extprocv3.CommonResponse{HeaderMutation: m}}},
		DynamicMetadata: extproc.Metadata(d, false),
	}
}

// serveLoopback serves g on a loopback port of this process and returns
// an ext_proc client of it.
func serveLoopback(g *grpc.Server) (extprocv3.ExternalProcessorClient, func()) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fail(err)
	}
	go g.Serve(lis)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fail(err)
	}
	return extprocv3.NewExternalProcessorClient(conn), func() { conn.Close(); g.Stop() }
}

// core times the extension's own work for one request, without gRPC:
// classification, tagging, admission and release, n times in a row.
func core(n int) (p50, p99 float64) {
	eng := phi.New(phi.Options{Scheduler: sched.New(sched.Config{}), Service: "bench"})
	lat := make([]float64, 0, n)
	ctx := context.Background()
	for i := range n {
		in := phi.Input{Method: "GET", Path: paths[i%len(paths)], Header: map[string]string{"accept": "application/json"}}
		start := time.Now()
		a, err := eng.Admit(ctx, in)
		if err != nil {
			fail(err)
		}
		_ = a.Decision.Tags()
		a.Done(200, "")
		lat = append(lat, float64(time.Since(start).Nanoseconds())/1000)
	}
	slices.Sort(lat)
	return pct(lat, 50), pct(lat, 99)
}
