package main

import (
	"log/slog"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/xds"

	"medmesh/controlplane/translate"
	"medmesh/examples/clinical"
)

// startServer serves examples/clinical on lis through grpc-go's xDS
// server. The returned channel closes the first time the server is
// SERVING, i.e. once the control plane has sent its inbound listener.
func startServer(lis net.Listener, o *options, log *slog.Logger) (*xds.GRPCServer, <-chan struct{}, error) {
	serving := make(chan struct{})
	var once sync.Once
	listener := translate.ProxylessServerListenerName("127.0.0.1", o.port)
	srv, err := xds.NewGRPCServer(
		// Plaintext for now: mTLS with SPIFFE SVIDs (xDS credentials on
		// both sides) arrives with the CA.
		grpc.Creds(insecure.NewCredentials()),
		xds.ServingModeCallback(func(addr net.Addr, a xds.ServingModeChangeArgs) {
			// Called on grpc-go's goroutines: log and signal, never block.
			if a.Mode == connectivity.ServingModeServing {
				log.Info("serving", "addr", addr.String(), "xds_listener", listener)
				once.Do(func() { close(serving) })
				return
			}
			log.Warn("not serving", "addr", addr.String(), "xds_listener", listener, "err", a.Err)
		}),
	)
	if err != nil {
		return nil, nil, err
	}
	clinical.Register(srv, &clinical.Server{Instance: o.id})
	go func() {
		if err := srv.Serve(lis); err != nil {
			log.Error("server stopped", "err", err)
		}
	}()
	return srv, serving, nil
}

// stopServer lets in-flight calls finish, but not forever: a caller that
// keeps a stream open must not keep a stopping instance alive.
func stopServer(srv *xds.GRPCServer, log *slog.Logger) {
	done := make(chan struct{})
	go func() { srv.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		log.Warn("calls still in flight after 5s; stopping anyway")
		srv.Stop()
		<-done
	}
}
