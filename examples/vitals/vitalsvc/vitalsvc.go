// Package vitalsvc is the vitals service of the vitals example: bedside
// devices stream frames to it (vitalsrpc Stream) through the mesh, it
// checks every frame (reliable.Receiver: CRC, length, order, duplicates;
// a corrupt frame is asked for again), admits each one through medmesh's
// priority scheduler (sidecar/sched) by the frame's own priority, and
// forwards it to the nurse stations. Reliable frames are acknowledged only
// once forwarded, so a device that fails over to another instance resends
// exactly what may not have reached a nurse station.
//
// A device's two lanes are worked on by two goroutines: its background
// frames never hold its alarms. The service's capacity is explicit
// (Options.Work per frame under a scheduler slot), so a flood beyond it is
// queued and shed by priority, lowest first, never the alarms.
//
// It logs counts and device handles, never a frame's payload.
package vitalsvc

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"medmesh/examples/vitals/frame"
	"medmesh/examples/vitals/reliable"
	"medmesh/examples/vitals/vitalsrpc"
	"medmesh/sidecar/classify"
	"medmesh/sidecar/sched"
)

// Forwarder opens a device's forwarding stream to the nurse stations.
type Forwarder interface {
	Open(ctx context.Context, device string) (Sink, error)
}

// Sink takes one device's frames, in order, and tells which reliable
// frames it has delivered.
type Sink interface {
	Send(raw []byte) error
	// Acked blocks until the receiving side acknowledges, cumulatively,
	// the reliable frames up to the sequence it returns.
	Acked() (uint64, error)
	Close() error
}

// Options configure a Server.
type Options struct {
	// Sched admits every data frame by its priority before the service
	// works on it (upstream "vitals"); nil admits at once.
	Sched *sched.Scheduler
	// Work is the service time of one frame, held under its scheduler
	// slot: a stand-in for validating and storing it that makes the
	// service's capacity explicit (slots / Work frames per second).
	Work time.Duration
	// Forward receives the frames; nil drops them once worked on.
	Forward Forwarder
	Log     *slog.Logger
	// Lane is each lane's queue length per device stream: frames the
	// stream has read but not yet worked on.
	Lane int
}

// upstream is the scheduler key of the service's own work.
const upstream = "vitals"

// Server serves devices (vitalsrpc.VitalsServer).
type Server struct {
	o Options

	streams, active, frames, forwarded, shed, requeued, corrupt, forwardErrs atomic.Int64
}

// New returns a server.
func New(o Options) *Server {
	if o.Lane <= 0 {
		o.Lane = 256
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return &Server{o: o}
}

// Stats are the server's counters.
type Stats struct {
	// Streams counts device streams since start, Active the open ones.
	Streams, Active, Frames, Forwarded int64
	// Shed best-effort frames were dropped under load; Requeued counts
	// the times a reliable frame was shed and queued again.
	Shed, Requeued, Corrupt, ForwardErrors int64
}

// Stats returns the counters so far.
func (s *Server) Stats() Stats {
	return Stats{Streams: s.streams.Load(), Active: s.active.Load(), Frames: s.frames.Load(), Forwarded: s.forwarded.Load(),
		Shed: s.shed.Load(), Requeued: s.requeued.Load(), Corrupt: s.corrupt.Load(), ForwardErrors: s.forwardErrs.Load()}
}

// Stream serves one device connection.
func (s *Server) Stream(st vitalsrpc.DeviceStream) error {
	ctx, cancel := context.WithCancel(st.Context())
	defer cancel()
	dev := vitalsrpc.Device(ctx)
	if dev == "" {
		return status.Errorf(codes.InvalidArgument, "no %s metadata: which device is this?", vitalsrpc.DeviceHeader)
	}
	s.streams.Add(1)
	s.active.Add(1)
	defer s.active.Add(-1)
	c := &conn{s: s, st: st, dev: dev}
	recv := reliable.NewReceiver(reliable.ReceiverOptions{Acks: true})
	lanes := [2]chan frame.Frame{make(chan frame.Frame, s.o.Lane), make(chan frame.Frame, s.o.Lane)}
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for i := range lanes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := c.work(ctx, lanes[i]); err != nil {
				errs <- err
				cancel()
			}
		}()
	}
	err := c.read(ctx, recv, lanes)
	for _, l := range lanes {
		close(l)
	}
	wg.Wait()
	c.closeSink()
	select {
	case werr := <-errs:
		return werr
	default:
	}
	if errors.Is(err, io.EOF) {
		return nil
	}
	return err
}

// conn is one device stream.
type conn struct {
	s   *Server
	st  vitalsrpc.DeviceStream
	dev string

	sendMu sync.Mutex // gRPC allows one sender at a time

	sinkMu sync.Mutex
	sink   Sink

	// The device releases every frame an Ack or a ResendRequest covers
	// (a ResendRequest for n acknowledges everything below n), so both
	// wait until the frames they cover are forwarded: done is the last
	// reliable sequence forwarded, pending a ResendRequest held until
	// done reaches the frame before it.
	ackMu   sync.Mutex
	done    uint64
	pending uint64
}

// read decodes and orders the device's frames and hands each to its
// lane. It answers resend requests at once; acknowledgements come from
// the reliable lane's worker, once a frame is forwarded.
func (c *conn) read(ctx context.Context, recv *reliable.Receiver, lanes [2]chan frame.Frame) error {
	for {
		m, err := c.st.Recv()
		if err != nil {
			return err
		}
		raw := m.GetValue()
		deliver, control, err := recv.Accept(raw, time.Now())
		if err != nil {
			c.s.corrupt.Add(1)
		}
		if err := c.answer(raw, control); err != nil {
			return err
		}
		for _, f := range deliver {
			if f.Type.Control() {
				continue
			}
			c.s.frames.Add(1)
			lane := lanes[1]
			if f.Flags&frame.Reliable != 0 {
				lane = lanes[0]
			}
			select {
			case lane <- f:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
}

// answer sends the receiver's control frames that are safe to send now.
// Its Acks are dropped: the reliable lane acknowledges each frame once
// forwarded (work). A Hello (a new or resumed stream) is answered with an
// Ack of what the device already knows acknowledged, so it stops
// resending the Hello. A ResendRequest waits for the frames below it.
func (c *conn) answer(raw []byte, control []frame.Frame) error {
	for _, f := range control {
		switch f.Type {
		case frame.TypeAck:
			if h, err := frame.Decode(raw); err == nil && h.Type == frame.TypeHello {
				next, _ := h.HelloSeqs()
				c.ackMu.Lock()
				c.done = max(c.done, next-1)
				c.ackMu.Unlock()
				if err := c.send(frame.NewAck(next-1, time.Now())); err != nil {
					return err
				}
			}
		case frame.TypeResendRequest:
			c.ackMu.Lock()
			now := f.Seq-1 <= c.done
			if !now {
				c.pending = max(c.pending, f.Seq)
			}
			c.ackMu.Unlock()
			if now {
				if err := c.send(f); err != nil {
					return err
				}
			}
		default:
			if err := c.send(f); err != nil {
				return err
			}
		}
	}
	return nil
}

// acked records that the reliable frames up to seq have reached a nurse
// station and tells the device: an Ack, and a held ResendRequest whose
// frames below are all delivered now.
func (c *conn) acked(seq uint64) error {
	now := time.Now()
	c.ackMu.Lock()
	if seq <= c.done {
		c.ackMu.Unlock()
		return nil
	}
	c.done = seq
	out := []frame.Frame{frame.NewAck(seq, now)}
	if c.pending != 0 && c.pending-1 <= c.done {
		if c.pending > c.done {
			out = append(out, frame.NewResendRequest(c.pending, now))
		}
		c.pending = 0
	}
	c.ackMu.Unlock()
	for _, f := range out {
		if err := c.send(f); err != nil {
			return err
		}
	}
	return nil
}

// work admits, works on and forwards one lane's frames in order. A
// reliable frame is never skipped: acknowledgements are cumulative, so
// acknowledging a later frame would lose it. It waits for admission as
// long as it takes, and a frame that cannot be forwarded ends the stream
// (the device reconnects and resends from its last acknowledged frame).
func (c *conn) work(ctx context.Context, lane <-chan frame.Frame) error {
	for f := range lane {
		if ctx.Err() != nil {
			continue // drain: the stream is ending
		}
		reliable := f.Flags&frame.Reliable != 0
		t, err := c.admit(ctx, f, reliable)
		if err != nil {
			if ctx.Err() == nil {
				c.s.shed.Add(1) // best effort: shed under load, lowest priority first
			}
			continue
		}
		if c.s.o.Work > 0 {
			time.Sleep(c.s.o.Work) // the service time the capacity is made of
		}
		err = c.forward(ctx, f)
		t.Release(sched.Success)
		if err != nil {
			c.s.forwardErrs.Add(1)
			c.closeSink()
			if reliable {
				return status.Errorf(codes.Unavailable, "cannot forward to the nurse station: %v; resend from the last acknowledged frame", err)
			}
			continue
		}
		c.s.forwarded.Add(1)
		if reliable && c.s.o.Forward == nil {
			// Nobody downstream to acknowledge: worked on is done.
			if err := c.acked(f.Seq); err != nil {
				return err
			}
		}
	}
	return nil
}

// admit waits for a scheduler slot at the frame's priority. A best-effort
// frame the scheduler sheds is dropped; a reliable one queues again.
func (c *conn) admit(ctx context.Context, f frame.Frame, reliable bool) (*sched.Ticket, error) {
	if c.s.o.Sched == nil {
		return nil, nil
	}
	for {
		t, err := c.s.o.Sched.Acquire(ctx, upstream, classify.Priority(f.Priority))
		if err == nil || !reliable || !errors.Is(err, sched.ErrShed) {
			return t, err
		}
		c.s.requeued.Add(1)
	}
}

func (c *conn) forward(ctx context.Context, f frame.Frame) error {
	if c.s.o.Forward == nil {
		return nil
	}
	raw, err := frame.Append(nil, f)
	if err != nil {
		return err
	}
	c.sinkMu.Lock()
	defer c.sinkMu.Unlock()
	if c.sink == nil {
		if c.sink, err = c.s.o.Forward.Open(ctx, c.dev); err != nil {
			return err
		}
		go c.relayAcks(c.sink)
	}
	return c.sink.Send(raw)
}

// relayAcks turns the nurse station's acknowledgements into the
// device's, until the sink's stream ends.
func (c *conn) relayAcks(sink Sink) {
	for {
		seq, err := sink.Acked()
		if err != nil {
			return
		}
		if err := c.acked(seq); err != nil {
			return
		}
	}
}

func (c *conn) closeSink() {
	c.sinkMu.Lock()
	defer c.sinkMu.Unlock()
	if c.sink != nil {
		c.sink.Close()
		c.sink = nil
	}
}

func (c *conn) send(f frame.Frame) error {
	raw, err := frame.Append(nil, f)
	if err != nil {
		return err
	}
	c.sendMu.Lock()
	defer c.sendMu.Unlock()
	return c.st.Send(&vitalsrpc.Msg{Value: raw})
}
