package main

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc/xds"

	"medmesh/examples/clinical"
	"medmesh/examples/meshapp"
)

// startServer serves examples/clinical on lis through grpc-go's xDS
// server (meshapp.NewServer). The returned channel closes the first time
// the server is SERVING, i.e. once the control plane has sent its
// inbound listener.
func startServer(lis net.Listener, o *options, log *slog.Logger, seen *callers) (*xds.GRPCServer, <-chan struct{}, error) {
	srv, serving, err := meshapp.NewServer(o.port, log)
	if err != nil {
		return nil, nil, err
	}
	clinical.Register(srv, &clinical.Server{Instance: o.id, Handle: func(ctx context.Context, _ string) error {
		seen.add(meshapp.CallerID(ctx))
		return nil
	}})
	go func() {
		if err := srv.Serve(lis); err != nil {
			log.Error("server stopped", "err", err)
		}
	}()
	return srv, serving, nil
}

// callers counts the calls this server answered per caller identity
// between two summaries.
type callers struct {
	mu sync.Mutex
	n  servedBy
}

func (c *callers) add(id string) {
	c.mu.Lock()
	if c.n == nil {
		c.n = servedBy{}
	}
	c.n[id]++
	c.mu.Unlock()
}

// logEvery logs, every d until ctx ends, one line "served" with the
// calls per caller identity since the last line (none when idle). The
// demo parses it.
func (c *callers) logEvery(ctx context.Context, d time.Duration, log *slog.Logger) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		c.mu.Lock()
		n := c.n
		c.n = nil
		c.mu.Unlock()
		if len(n) > 0 {
			log.Info("served", "callers", n)
		}
	}
}
