// Package reliable carries a device's vitals frames over a lossy link:
// acknowledgements, resends, in-order delivery and deduplication, in two
// lanes per device stream.
//
// The reliable lane carries CRITICAL and HIGH frames (alarms, ECG, SpO2,
// blood pressure). Each has a sequence number; the Sender keeps it until
// the Receiver acknowledges it, and resends it after a timeout or when the
// Receiver asks; the Receiver delivers the lane strictly in sequence order
// and drops duplicates. The best-effort lane carries everything less
// urgent (device status, history sync) with its own sequence numbers: a
// frame is delivered at once if it is newer than the last one delivered,
// and dropped otherwise; it is never resent and never waits for the
// reliable lane, nor the reliable lane for it.
//
// Neither side does I/O, reads a clock or logs: callers pass frames and
// the time in, and send what comes out. That keeps the protocol testable
// with a fake clock and a simulated link, and keeps vitals payloads out of
// logs (PHI).
//
// # A connection's life
//
// When a connection opens (the first one included) the device sends what
// Sender.Resume returns: a Hello naming where each lane continues, then
// every reliable frame not yet acknowledged. This is also failover: a
// device whose vitals instance died connects to another instance, whose
// fresh Receiver learns from the Hello where the stream stands, and the
// frames the dead instance never acknowledged arrive again. Frames the
// dead instance delivered but did not acknowledge are therefore delivered
// twice, once by each instance; subscribers downstream see the original
// sequence numbers and drop the second copy with an order-only Receiver
// (ReceiverOptions.Acks false).
//
// A Sender's sequences must not restart while a Receiver remembers the
// stream: a device that loses its sending state is a new stream.
package reliable

import (
	"errors"
	"fmt"
	"time"

	"medmesh/examples/vitals/frame"
)

// SenderOptions configure a Sender; zero fields take the defaults.
type SenderOptions struct {
	// Window is the most unacknowledged reliable frames held for resend.
	Window int
	// CriticalReserve is the part of the window only CRITICAL frames may
	// use, so that a backlog of waveform chunks on a bad link cannot make
	// the device refuse a cardiac-arrest alarm. Default Window/8;
	// negative: none.
	CriticalReserve int
	// ResendAfter is how long an unacknowledged reliable frame waits
	// before Due returns it again. It should
	// exceed the round trip plus the receiver's ack coalescing delay, or
	// frames that arrived are resent (harmless: they are dropped as
	// duplicates).
	ResendAfter time.Duration
}

// Defaults.
const (
	DefaultWindow      = 256
	DefaultResendAfter = 500 * time.Millisecond
)

func (o SenderOptions) withDefaults() SenderOptions {
	if o.Window <= 0 {
		o.Window = DefaultWindow
	}
	switch {
	case o.CriticalReserve == 0:
		o.CriticalReserve = o.Window / 8
	case o.CriticalReserve < 0:
		o.CriticalReserve = 0
	}
	o.CriticalReserve = min(o.CriticalReserve, o.Window-1)
	if o.ResendAfter <= 0 {
		o.ResendAfter = DefaultResendAfter
	}
	return o
}

// Errors.
var (
	// ErrWindowFull: Send refused a reliable frame because the window of
	// unacknowledged frames is full. Nothing was sent or numbered; the
	// caller decides (keep the sample and retry, raise a device alarm).
	ErrWindowFull = errors.New("reliable window full")
	// ErrNotData: Send was given a control frame or an invalid one.
	ErrNotData = errors.New("not a sendable data frame")
	// ErrBadControl: a control frame that makes no sense for this
	// stream (acknowledges frames never sent, or is not a control
	// frame). It is ignored.
	ErrBadControl = errors.New("bad control frame")
)

// SenderStats are a Sender's counters since it was made.
type SenderStats struct {
	Sent           uint64 // new frames numbered by Send, both lanes
	SentReliable   uint64 // of which in the reliable lane
	Refused        uint64 // Send calls refused with ErrWindowFull
	Unacked        int    // reliable frames held now
	Acked          uint64 // highest reliable sequence acknowledged
	Acks           uint64 // Ack frames received
	ResendRequests uint64 // ResendRequest frames received
	Resends        uint64 // reliable frames sent again (Due, OnControl, Resume)
	Hellos         uint64 // Hellos sent (Resume, and Due before each batch of resends)
}

type pending struct {
	f      frame.Frame
	sentAt time.Time
}

// Sender is one device stream's sending side. It is not safe for
// concurrent use: a device stream has one writer. Frames it returns share
// payloads with the copies it keeps for resends: encode them, do not
// modify them.
type Sender struct {
	opts SenderOptions
	// nextRel and nextBE are the next new sequence in each lane.
	nextRel, nextBE uint64
	// unacked holds sequences acked+1 .. nextRel-1, in order: every
	// reliable frame is kept from Send until acknowledged, so there are
	// no holes.
	unacked []pending
	acked   uint64
	stats   SenderStats
}

// NewSender returns a Sender whose lanes start at sequence 1.
func NewSender(o SenderOptions) *Sender {
	return &Sender{opts: o.withDefaults(), nextRel: 1, nextBE: 1}
}

// Send numbers a new data frame and returns it, ready to encode and
// write. The lane follows the priority (CRITICAL and HIGH reliable, see
// frame.Priority.Reliable); f's Flags and Seq are overwritten. A reliable
// frame is kept for resends, with its payload copied, so the caller may
// reuse its buffer.
//
// Send refuses a reliable frame with ErrWindowFull when Window frames are
// unacknowledged (Window-CriticalReserve for HIGH): the frame is not
// numbered, and the caller sees the refusal; the reliable lane never drops
// a frame it accepted. Best-effort frames are never refused for the
// window.
func (s *Sender) Send(f frame.Frame, now time.Time) (frame.Frame, error) {
	if f.Type.Control() {
		return frame.Frame{}, fmt.Errorf("%w: %s is a control type", ErrNotData, f.Type)
	}
	f.Flags, f.Seq = 0, 0
	if err := f.Validate(); err != nil {
		return frame.Frame{}, fmt.Errorf("%w: %w", ErrNotData, err)
	}
	if !f.Priority.Reliable() {
		f.Seq = s.nextBE
		s.nextBE++
		s.stats.Sent++
		return f, nil
	}
	limit := s.opts.Window
	if f.Priority != frame.Critical {
		limit -= s.opts.CriticalReserve
	}
	if len(s.unacked) >= limit {
		s.stats.Refused++
		return frame.Frame{}, fmt.Errorf("%w: %d %s frames unacknowledged (limit %d)", ErrWindowFull, len(s.unacked), f.Priority, limit)
	}
	f.Flags, f.Seq = frame.Reliable, s.nextRel
	if f.Payload != nil {
		f.Payload = append([]byte(nil), f.Payload...)
	}
	s.nextRel++
	s.unacked = append(s.unacked, pending{f: f, sentAt: now})
	s.stats.Sent++
	s.stats.SentReliable++
	return f, nil
}

// OnControl takes an Ack or ResendRequest from the receiver and returns
// the frames to send again now (a ResendRequest's frame, marked Resent).
// Acknowledged frames are released. Both kinds are cumulative: a
// ResendRequest for n acknowledges everything below n. A stale control
// frame (from an earlier connection, acknowledging less than is already
// acknowledged) is harmless. A control frame acknowledging frames never
// sent is refused with ErrBadControl and changes nothing.
func (s *Sender) OnControl(f frame.Frame, now time.Time) ([]frame.Frame, error) {
	switch f.Type {
	case frame.TypeAck:
		if f.Seq >= s.nextRel {
			return nil, fmt.Errorf("%w: ack of %d, only %d sent", ErrBadControl, f.Seq, s.nextRel-1)
		}
		s.stats.Acks++
		s.release(f.Seq)
		return nil, nil
	case frame.TypeResendRequest:
		if f.Seq > s.nextRel || f.Seq == 0 {
			return nil, fmt.Errorf("%w: resend request for %d, only %d sent", ErrBadControl, f.Seq, s.nextRel-1)
		}
		s.stats.ResendRequests++
		s.release(f.Seq - 1)
		if f.Seq <= s.acked || f.Seq == s.nextRel {
			// Already acknowledged (a stale request), or not sent yet (the
			// receiver asks after a corrupt frame while fully caught up).
			return nil, nil
		}
		return []frame.Frame{s.resend(0, now)}, nil
	}
	return nil, fmt.Errorf("%w: %s frame", ErrBadControl, f.Type)
}

// release drops the frames acknowledged up to seq.
func (s *Sender) release(seq uint64) {
	if seq <= s.acked {
		return
	}
	n := int(seq - s.acked) // seq < nextRel, so n <= len(unacked)
	clear(s.unacked[:n])    // let the payloads go
	s.unacked = append(s.unacked[:0], s.unacked[n:]...)
	s.acked = seq
}

// resend marks unacked[i] as resent now and returns it.
func (s *Sender) resend(i int, now time.Time) frame.Frame {
	p := &s.unacked[i]
	p.f.Flags |= frame.Resent
	p.sentAt = now
	s.stats.Resends++
	return p.f
}

// Due returns what is due for resending at now: every reliable frame
// sent ResendAfter or longer ago and still unacknowledged, in sequence
// order and marked Resent, after a Hello. The Hello makes resends
// self-sufficient: a receiver that missed the connection's first Hello
// (it was lost, or the connection moved to another instance unnoticed)
// drops reliable frames until it has one, and learns it from the next
// batch. Nothing is due, not even a Hello, when nothing is unacknowledged.
// The reliable lane never gives up on a frame; a link that stays down
// fills the window and Send refuses.
func (s *Sender) Due(now time.Time) []frame.Frame {
	var out []frame.Frame
	for i := range s.unacked {
		if now.Sub(s.unacked[i].sentAt) >= s.opts.ResendAfter {
			if out == nil {
				out = append(out, s.hello(now))
			}
			out = append(out, s.resend(i, now))
		}
	}
	return out
}

// Resume returns what to send first on a new connection: a Hello with the
// next sequence of each lane (for the reliable lane the oldest
// unacknowledged one), then every unacknowledged reliable frame in order,
// marked Resent. Call it for every connection, the first included.
func (s *Sender) Resume(now time.Time) []frame.Frame {
	out := make([]frame.Frame, 0, 1+len(s.unacked))
	out = append(out, s.hello(now))
	for i := range s.unacked {
		out = append(out, s.resend(i, now))
	}
	return out
}

func (s *Sender) hello(now time.Time) frame.Frame {
	s.stats.Hellos++
	return frame.NewHello(s.acked+1, s.nextBE, now)
}

// Stats returns the counters.
func (s *Sender) Stats() SenderStats {
	st := s.stats
	st.Unacked = len(s.unacked)
	st.Acked = s.acked
	return st
}
