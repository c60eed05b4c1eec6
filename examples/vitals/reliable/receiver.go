package reliable

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"medmesh/examples/vitals/frame"
)

// ReceiverOptions configure a Receiver; zero fields take the defaults.
type ReceiverOptions struct {
	// Acks makes the Receiver the device's peer: it answers with Acks
	// and ResendRequests, and delivers nothing of the reliable lane until
	// a Hello has said where the lane starts. Without Acks it only orders
	// and deduplicates: that is a subscriber downstream of the vitals
	// service, which sees frames with their original sequence numbers,
	// some twice after a device fails over, and cannot ask for resends.
	Acks bool
	// AckEvery coalesces acknowledgements: an Ack goes out once this many
	// reliable frames have been delivered since the last one (default 1:
	// every Accept that delivers reliable frames). An Ack is sent at once,
	// whatever AckEvery says, after a CRITICAL frame (the device learns
	// its alarm arrived), a duplicate (the sender missed an Ack and is
	// resending) and a Hello. Flush sends one held back; with AckEvery
	// above 1 call it on a timer well inside the sender's ResendAfter.
	AckEvery int
	// ReorderLimit bounds the reliable frames held ahead of a gap: a
	// frame ReorderLimit or more past the next expected sequence is not
	// held. With Acks it is dropped (the sender resends it; keep
	// ReorderLimit at least the sender's Window so this never happens to
	// a well-behaved sender); without Acks the gap is given up instead
	// (counted in Skipped), since no resend will come.
	ReorderLimit int
	// RequestInterval is the least time between two ResendRequests for
	// the same sequence, so a burst of frames arriving past one gap asks
	// once, not once per frame.
	RequestInterval time.Duration
}

// Defaults. The reorder buffer is twice the sender's window.
const (
	DefaultReorderLimit    = 2 * DefaultWindow
	DefaultRequestInterval = 100 * time.Millisecond
)

func (o ReceiverOptions) withDefaults() ReceiverOptions {
	if o.AckEvery <= 0 {
		o.AckEvery = 1
	}
	if o.ReorderLimit <= 0 {
		o.ReorderLimit = DefaultReorderLimit
	}
	if o.RequestInterval <= 0 {
		o.RequestInterval = DefaultRequestInterval
	}
	return o
}

// ErrUnexpected: Accept was given an Ack or ResendRequest, which travel
// the other way.
var ErrUnexpected = errors.New("unexpected control frame")

// ReceiverStats are a Receiver's counters since it was made.
type ReceiverStats struct {
	Delivered         uint64 // frames delivered, both lanes
	DeliveredReliable uint64 // of which in the reliable lane
	Duplicates        uint64 // reliable frames already delivered or held; best-effort equal to the last delivered
	Stale             uint64 // best-effort frames older than the last delivered
	Corrupt           uint64 // raw frames that failed to decode (CRC, truncation, malformed); never delivered
	Buffered          uint64 // reliable frames that arrived ahead of a gap and were held
	Held              int    // reliable frames held now
	Dropped           uint64 // reliable frames not held: past ReorderLimit, or before the first Hello (Acks)
	Skipped           uint64 // reliable sequences given up: gaps a Hello moved past, or past ReorderLimit without Acks
	Unexpected        uint64 // Acks and ResendRequests received (they travel the other way)
	Hellos            uint64 // Hellos received
	Acks              uint64 // Acks sent
	ResendRequests    uint64 // ResendRequests sent
}

// Receiver is the receiving side of one device stream. It is not safe for
// concurrent use.
type Receiver struct {
	opts ReceiverOptions
	// started: the reliable lane's start is known (a Hello, or without
	// Acks the first reliable frame). expected is then the next sequence
	// to deliver.
	started  bool
	expected uint64
	held     map[uint64]frame.Frame
	// lastBE is the newest best-effort sequence delivered (0: none).
	lastBE uint64
	// sinceAck counts reliable deliveries not yet acknowledged; ackNow
	// asks for an Ack regardless of AckEvery.
	sinceAck int
	ackNow   bool
	// The last ResendRequest, for RequestInterval.
	reqSeq uint64
	reqAt  time.Time
	stats  ReceiverStats
}

// NewReceiver returns a Receiver.
func NewReceiver(o ReceiverOptions) *Receiver {
	return &Receiver{opts: o.withDefaults(), held: map[uint64]frame.Frame{}}
}

// Accept takes one raw frame (a whole message: stream transports cut
// frames with frame.Split first) and returns the frames now deliverable,
// in order, and the control frames to send back (none without Acks).
// Delivered payloads are copies: raw may be reused at once.
//
// A frame that does not decode is never delivered: it is counted as
// Corrupt, err says why, and (with Acks) a ResendRequest for the first
// missing reliable sequence goes back, since the frame may have been it.
// Reliable duplicates are dropped; reliable frames ahead of a gap are held
// until it fills (and with Acks a ResendRequest asks for the gap).
// Best-effort frames are delivered at once if newer than the last
// delivered one, and dropped otherwise. A Hello sets where the lanes
// start (see Hello handling in docs/vitals-frames.md); Acks and
// ResendRequests are refused with ErrUnexpected.
//
// deliver and control are valid whatever err says.
func (r *Receiver) Accept(raw []byte, now time.Time) (deliver, control []frame.Frame, err error) {
	f, err := frame.Decode(raw)
	if err != nil {
		r.stats.Corrupt++
		if r.opts.Acks && r.started {
			control = r.request(control, now)
		}
		return nil, control, err
	}
	switch {
	case f.Type == frame.TypeHello:
		deliver = r.hello(f)
	case f.Type.Control():
		r.stats.Unexpected++
		return nil, nil, fmt.Errorf("%w: %s sent to a receiver", ErrUnexpected, f.Type)
	case f.Flags&frame.Reliable != 0:
		deliver = r.reliable(f)
	default:
		deliver = r.bestEffort(f)
	}
	if r.opts.Acks && r.started {
		if len(r.held) > 0 {
			control = r.request(control, now)
		}
		control = r.ack(control, now, false)
	}
	return deliver, control, nil
}

// Flush returns the control frames held back: an Ack for reliable frames
// delivered since the last one (AckEvery above 1), and a repeated
// ResendRequest if a gap is still open and RequestInterval has passed.
// Nothing without Acks.
func (r *Receiver) Flush(now time.Time) []frame.Frame {
	if !r.opts.Acks || !r.started {
		return nil
	}
	var control []frame.Frame
	if len(r.held) > 0 {
		control = r.request(control, now)
	}
	return r.ack(control, now, true)
}

func (r *Receiver) hello(f frame.Frame) []frame.Frame {
	r.stats.Hellos++
	rel, be := f.HelloSeqs()
	// Best-effort frames older than the sender's next one belong to an
	// earlier connection: too late.
	r.lastBE = max(r.lastBE, be-1)
	// Answer at once: the Ack tells the sender where we stand, which on a
	// reconnect may be past its last acknowledged sequence.
	r.ackNow = true
	switch {
	case !r.started:
		r.started, r.expected = true, rel
		return r.drain(nil)
	case rel > r.expected:
		// The sender says everything below rel was acknowledged, by us or
		// by an instance it talked to meanwhile; it will not send those
		// again. Deliver what is held below rel and move on.
		return r.advance(rel)
	}
	// rel <= expected: a resume from the last acknowledged sequence;
	// what we already delivered will arrive again and be dropped.
	return nil
}

func (r *Receiver) reliable(f frame.Frame) []frame.Frame {
	if f.Seq == math.MaxUint64 {
		// The one sequence after which expected would wrap; no sender
		// gets there.
		r.stats.Dropped++
		return nil
	}
	if !r.started {
		if r.opts.Acks {
			// Where the lane starts is unknown until the Hello: this may
			// not be the first frame. The sender resends the Hello and it.
			r.stats.Dropped++
			return nil
		}
		// A subscriber joins at the first frame it sees.
		r.started, r.expected = true, f.Seq
	}
	switch {
	case f.Seq < r.expected:
		r.stats.Duplicates++
		r.ackNow = true
		return nil
	case f.Seq == r.expected:
		return r.drain(r.take(nil, r.own(f)))
	}
	if _, ok := r.held[f.Seq]; ok {
		r.stats.Duplicates++
		return nil
	}
	var out []frame.Frame
	if f.Seq-r.expected >= uint64(r.opts.ReorderLimit) {
		if r.opts.Acks {
			r.stats.Dropped++
			return nil
		}
		out = r.advance(f.Seq - uint64(r.opts.ReorderLimit) + 1)
		if f.Seq == r.expected {
			return r.drain(r.take(out, r.own(f)))
		}
	}
	r.held[f.Seq] = r.own(f)
	r.stats.Buffered++
	return out
}

// own copies f's payload out of the caller's buffer.
func (r *Receiver) own(f frame.Frame) frame.Frame {
	if f.Payload != nil {
		f.Payload = append([]byte(nil), f.Payload...)
	}
	return f
}

// take delivers f, the expected reliable frame.
func (r *Receiver) take(out []frame.Frame, f frame.Frame) []frame.Frame {
	r.expected = f.Seq + 1
	r.delivered(f)
	return append(out, f)
}

// drain delivers the held frames that continue the lane, in order.
func (r *Receiver) drain(out []frame.Frame) []frame.Frame {
	for {
		f, ok := r.held[r.expected]
		if !ok {
			return out
		}
		delete(r.held, r.expected)
		out = r.take(out, f)
	}
}

// advance gives up the reliable sequences below to: held frames below it
// are delivered in order, the missing ones counted as Skipped. It costs
// the number of held frames, not the distance, so a Hello far ahead is
// cheap.
func (r *Receiver) advance(to uint64) []frame.Frame {
	var below []uint64
	for seq := range r.held {
		if seq < to {
			below = append(below, seq)
		}
	}
	slices.Sort(below)
	var out []frame.Frame
	for _, seq := range below {
		f := r.held[seq]
		delete(r.held, seq)
		r.delivered(f)
		out = append(out, f)
	}
	r.stats.Skipped += to - r.expected - uint64(len(below))
	r.expected = to
	return r.drain(out)
}

func (r *Receiver) delivered(f frame.Frame) {
	r.stats.Delivered++
	if f.Flags&frame.Reliable == 0 {
		return
	}
	r.stats.DeliveredReliable++
	r.sinceAck++
	if f.Priority == frame.Critical {
		r.ackNow = true
	}
}

func (r *Receiver) bestEffort(f frame.Frame) []frame.Frame {
	switch {
	case f.Seq == r.lastBE:
		r.stats.Duplicates++
		return nil
	case f.Seq < r.lastBE:
		r.stats.Stale++
		return nil
	}
	r.lastBE = f.Seq
	f = r.own(f)
	r.delivered(f)
	return []frame.Frame{f}
}

// request appends a ResendRequest for the first missing reliable
// sequence, unless one went out for it within RequestInterval.
func (r *Receiver) request(control []frame.Frame, now time.Time) []frame.Frame {
	if r.reqSeq == r.expected && !r.reqAt.IsZero() && now.Sub(r.reqAt) < r.opts.RequestInterval {
		return control
	}
	r.reqSeq, r.reqAt = r.expected, now
	r.stats.ResendRequests++
	// A ResendRequest also acknowledges everything below it.
	r.sinceAck, r.ackNow = 0, false
	return append(control, frame.NewResendRequest(r.expected, now))
}

// ack appends an Ack of everything delivered in order, if one is due
// (flush: any delivery not yet acknowledged).
func (r *Receiver) ack(control []frame.Frame, now time.Time, flush bool) []frame.Frame {
	due := r.ackNow || r.sinceAck >= r.opts.AckEvery || (flush && r.sinceAck > 0)
	if !due {
		return control
	}
	r.sinceAck, r.ackNow = 0, false
	r.stats.Acks++
	return append(control, frame.NewAck(r.expected-1, now))
}

// Stats returns the counters.
func (r *Receiver) Stats() ReceiverStats {
	st := r.stats
	st.Held = len(r.held)
	return st
}
