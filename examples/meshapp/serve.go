package meshapp

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"google.golang.org/grpc"
)

// Serve runs an instance's gRPC services in the mesh until ctx ends, in
// the order that loses no calls: register in Consul with the check
// critical (so the control plane sends the inbound listener but nobody is
// routed here yet), serve, turn passing once the listener arrives; on
// the way out leave Consul first, keep serving for drain while callers
// move away, then stop. register adds the services to the server.
func Serve(ctx context.Context, in Instance, xdsAddress string, drain time.Duration, log *slog.Logger, register func(grpc.ServiceRegistrar)) error {
	lis, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(in.Port)))
	if err != nil {
		return err
	}
	srv, serving, err := NewServer(in.Port, log)
	if err != nil {
		lis.Close()
		return err
	}
	register(srv)
	go func() {
		if err := srv.Serve(lis); err != nil {
			log.Error("server stopped", "err", err)
		}
	}()
	defer StopServer(srv, log)
	reg, err := NewRegistration(in, log)
	if err != nil {
		return err
	}
	if err := reg.Register(ctx); err != nil {
		return err
	}
	defer reg.Deregister()
	select {
	case <-serving:
	case <-ctx.Done():
		return nil
	case <-time.After(60 * time.Second):
		return fmt.Errorf("no inbound listener from the control plane at %s after 60s (is it running, and does it see this instance in Consul?)", xdsAddress)
	}
	hb := reg.StartHeartbeat(ctx)
	<-ctx.Done()
	hb.Stop()
	reg.Deregister()
	time.Sleep(drain) // keep serving while the mesh moves callers away
	return nil
}
