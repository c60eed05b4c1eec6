package main

import (
	"context"
	"log/slog"
	"sort"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/status"

	"medmesh/examples/clinical"
	"medmesh/examples/meshapp"
)

// callTimeout bounds one Fetch: a clinical caller wants a fast failure it
// can retry or report, not a hung request.
const callTimeout = 2 * time.Second

// warmUp is how long a caller waits for its first ready connection before
// it starts counting; calls made while xDS is still resolving would only
// report the start-up order, not the mesh.
const warmUp = 15 * time.Second

// startCallers calls every --calls target until ctx ends; the returned
// channel closes when all callers have logged their last summary.
func startCallers(ctx context.Context, o *options, log *slog.Logger) <-chan struct{} {
	done := make(chan struct{})
	var wg sync.WaitGroup
	for _, target := range o.calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			callLoop(ctx, o, log, target)
		}()
	}
	go func() { wg.Wait(); close(done) }()
	return done
}

func callLoop(ctx context.Context, o *options, log *slog.Logger, target string) {
	cc, err := meshapp.Dial(target)
	if err != nil {
		log.Error("cannot create an xDS client", "target", target, "err", err)
		return
	}
	defer cc.Close()
	if waitReady(ctx, cc) {
		log.Info("connected through the mesh", "target", "xds:///"+target)
	} else if ctx.Err() != nil {
		return
	} else {
		log.Warn("no ready connection yet; calling anyway", "target", "xds:///"+target, "state", cc.GetState().String())
	}

	kinds := recordKinds[target]
	if len(kinds) == 0 {
		kinds = []string{"Record"}
	}
	w := window{target: target, servedBy: servedBy{}}
	calls := time.NewTicker(o.interval)
	defer calls.Stop()
	report := time.NewTicker(o.report)
	defer report.Stop()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			w.flush(log)
			return
		case <-report.C:
			w.flush(log)
		case <-calls.C:
			cctx, cancel := context.WithTimeout(ctx, callTimeout)
			inst, err := clinical.Fetch(cctx, cc, kinds[i%len(kinds)])
			cancel()
			switch {
			case err != nil && ctx.Err() != nil:
				// Cancelled by our own shutdown: not the mesh's failure.
			case err != nil:
				w.failed++
				w.lastErr = shortErr(err)
			default:
				w.ok++
				w.servedBy[inst]++
			}
		}
	}
}

// waitReady waits, at most warmUp, for the channel's first READY state.
func waitReady(ctx context.Context, cc *grpc.ClientConn) bool {
	ctx, cancel := context.WithTimeout(ctx, warmUp)
	defer cancel()
	cc.Connect()
	for {
		s := cc.GetState()
		if s == connectivity.Ready {
			return true
		}
		if !cc.WaitForStateChange(ctx, s) {
			return false
		}
	}
}

// window counts one target's calls between two summaries.
type window struct {
	target     string
	ok, failed int
	servedBy   servedBy
	lastErr    string
}

// flush logs the one-line summary and starts a new window. The demo
// parses it: message "calls", the caller in "instance" (set on the logger).
func (w *window) flush(log *slog.Logger) {
	if w.ok == 0 && w.failed == 0 {
		return
	}
	attrs := []any{"target", w.target, "ok", w.ok, "failed", w.failed, "served_by", w.servedBy}
	if w.lastErr != "" {
		attrs = append(attrs, "last_error", w.lastErr)
	}
	log.Info("calls", attrs...)
	w.ok, w.failed, w.lastErr, w.servedBy = 0, 0, "", servedBy{}
}

// servedBy counts answers per instance; it logs as a group, so JSON logs
// carry an object and text logs served_by.emr-1=5.
type servedBy map[string]int

func (s servedBy) LogValue() slog.Value {
	ids := make([]string, 0, len(s))
	for id := range s {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	attrs := make([]slog.Attr, 0, len(ids))
	for _, id := range ids {
		attrs = append(attrs, slog.Int(id, s[id]))
	}
	return slog.GroupValue(attrs...)
}

func shortErr(err error) string {
	st := status.Convert(err)
	msg := st.Code().String() + ": " + st.Message()
	if len(msg) > 120 {
		msg = msg[:120] + "..."
	}
	return msg
}
