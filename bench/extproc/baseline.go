package main

import (
	"context"
	"net"
	"slices"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"medmesh/sidecar/phi"
	"medmesh/sidecar/sched"
)

// echoProcessor answers every ext_proc message at once, doing nothing: the
// floor that gRPC, loopback and the Go runtime set on this machine for one
// ext_proc exchange, which no extension can go below. The extension's own
// cost is what it adds to this floor.
type echoProcessor struct {
	extprocv3.UnimplementedExternalProcessorServer
}

func (echoProcessor) Process(s extprocv3.ExternalProcessor_ProcessServer) error {
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

func newEchoServer() *grpc.Server {
	g := grpc.NewServer()
	extprocv3.RegisterExternalProcessorServer(g, echoProcessor{})
	return g
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
