package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"medmesh/examples/telehealth/peer"
)

// Pauses between joins that did not lead to a connected call; a call
// that was connected is joined again at once.
const (
	minBackoff = 250 * time.Millisecond
	maxBackoff = 5 * time.Second
)

// party keeps one party in its call: it joins, waits for the call to
// end, and joins again, adding each call's figures to its totals.
type party struct {
	o    peer.Options
	dial peer.Dialer
	log  *slog.Logger

	mu   sync.Mutex
	call *peer.Call // the current call; nil between calls
	// failed: the last join or call failed (until the next join);
	// stopped: the party left its call to stop.
	failed, stopped bool
	reconnects      int
	// Totals of the calls that ended, and the frame latencies they
	// recorded that no report has shown yet.
	rtp, framesSent, frames, bad int
	latencies                    []time.Duration
}

func newParty(o peer.Options, dial peer.Dialer, log *slog.Logger) *party {
	return &party{o: o, dial: dial, log: log}
}

// run keeps the party in its call until ctx ends, then leaves it.
func (p *party) run(ctx context.Context) {
	backoff := minBackoff
	for ctx.Err() == nil {
		if p.once(ctx) {
			backoff = minBackoff
			continue
		}
		select {
		case <-ctx.Done():
		case <-time.After(backoff): // pacing retries, not synchronisation
		}
		backoff = min(2*backoff, maxBackoff)
	}
	p.mu.Lock()
	p.stopped = true
	p.mu.Unlock()
}

// once is one call: join, wait for its end (or ctx's), leave. It says
// whether the call was connected.
func (p *party) once(ctx context.Context) (connected bool) {
	cctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the signalling stream with the call
	conn, err := p.dial(cctx)
	var call *peer.Call
	if err == nil {
		if call, err = peer.Join(cctx, conn, p.o); err != nil {
			_ = conn.CloseSend()
		}
	}
	if err != nil {
		if ctx.Err() == nil {
			p.mu.Lock()
			p.failed = true
			p.mu.Unlock()
			p.log.Warn("cannot join the call", "reason", reason(err))
		}
		return false
	}
	p.mu.Lock()
	p.call, p.failed = call, false
	p.mu.Unlock()
	p.log.Info("joined the call", "kind", p.o.Kind)

	select {
	case <-call.Ended():
	case <-ctx.Done():
	}
	select {
	case <-call.Connected():
		connected = true
	default:
	}
	// Leaving ends the signalling stream: the other party gets a bye.
	call.Close()
	stopping := ctx.Err() != nil
	callErr := call.Err()

	p.mu.Lock()
	s := call.Stats()
	for _, n := range s.RTPPayloadTypes {
		p.rtp += n
	}
	p.framesSent += s.FramesSent
	p.frames += s.FramesReceived
	p.bad += s.BadFrames
	p.latencies = append(p.latencies, call.TakeFrameLatencies()...)
	p.call = nil
	if !stopping {
		p.reconnects++
		p.failed = callErr != nil
	}
	p.mu.Unlock()

	if stopping {
		p.log.Info("left the call")
		return connected
	}
	attrs := []any{"reason", reason(callErr), "was_connected", connected}
	if callErr != nil {
		p.log.Warn("call ended; joining again", attrs...)
	} else {
		p.log.Info("call ended; joining again", attrs...)
	}
	return connected
}

// report is the figures so far; the frame latencies are those since the
// previous report.
func (p *party) report() peer.Report {
	p.mu.Lock()
	defer p.mu.Unlock()
	r := peer.Report{Role: p.o.Role, State: peer.StateConnecting, Reconnects: p.reconnects,
		RTPPackets: p.rtp, FramesSent: p.framesSent, Frames: p.frames, FramesBadCRC: p.bad}
	lat := p.latencies
	p.latencies = nil
	if c := p.call; c != nil {
		lat = append(lat, c.TakeFrameLatencies()...)
		s := c.Stats()
		for _, n := range s.RTPPayloadTypes {
			r.RTPPackets += n
		}
		r.FramesSent += s.FramesSent
		r.Frames += s.FramesReceived
		r.FramesBadCRC += s.BadFrames
		if isClosed(c.Connected()) && !isClosed(c.Ended()) {
			r.State = peer.StateConnected
			r.SetupMS = peer.Millis(s.Setup)
		}
	} else if p.stopped {
		r.State = peer.StateStopped
	} else if p.failed {
		r.State = peer.StateFailed
	}
	if len(lat) > 0 {
		r.FrameP50MS, r.FrameP99MS = peer.Millis(peer.Percentile(lat, 50)), peer.Millis(peer.Percentile(lat, 99))
	}
	return r
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// reason is why a join failed or a call ended, in words that may be
// logged: the signalling service's own messages (which never quote a
// call name or a description), a gRPC status code (not its message,
// which may carry addresses), or a fixed phrase.
func reason(err error) string {
	var se *peer.ServerError
	switch {
	case err == nil:
		return "the other party left"
	case errors.As(err, &se):
		return "signalling: " + se.Message
	case errors.Is(err, peer.ErrConnectionFailed):
		return peer.ErrConnectionFailed.Error()
	case errors.Is(err, io.EOF):
		return "the signalling service ended the session"
	}
	if c := status.Code(err); c != codes.Unknown {
		return "signalling stream: " + c.String()
	}
	return "call setup failed (the details may quote the session description: not logged)"
}
