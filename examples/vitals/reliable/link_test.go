package reliable

import (
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"medmesh/examples/vitals/frame"
)

// link is a deterministic faulty link in one direction: it drops,
// duplicates, corrupts (bit flips and truncation) and delays (so
// reorders) what it carries, drawing from a seeded generator, and delivers
// by a fake clock.
type link struct {
	rng                  *rand.Rand
	drop, dup, corrupt   float64
	maxDelay             time.Duration
	queue                []packet
	corrupted, delivered int // corrupted packets delivered, all packets delivered
	sent                 int
	cut                  bool
}

type packet struct {
	at      time.Time
	n       int // send order, to keep delivery stable among equal times
	b       []byte
	corrupt bool
}

func newLink(seed uint64, drop, dup, corrupt float64, maxDelay time.Duration) *link {
	return &link{rng: rand.New(rand.NewPCG(seed, seed^0x5eed)), drop: drop, dup: dup, corrupt: corrupt, maxDelay: maxDelay}
}

func (l *link) send(b []byte, now time.Time) {
	if l.cut || l.rng.Float64() < l.drop {
		return
	}
	copies := 1
	if l.rng.Float64() < l.dup {
		copies = 2
	}
	for range copies {
		p := packet{at: now.Add(time.Duration(l.rng.Int64N(int64(l.maxDelay) + 1))), n: l.sent, b: slices.Clone(b)}
		l.sent++
		if l.rng.Float64() < l.corrupt {
			p.corrupt = true
			if l.rng.IntN(2) == 0 {
				// A burst of 1 to 8 bits within one byte: always caught by
				// the CRC, like any burst of up to 16 bits.
				p.b[l.rng.IntN(len(p.b))] ^= byte(1 + l.rng.IntN(255))
			} else {
				p.b = p.b[:l.rng.IntN(len(p.b))]
			}
		}
		l.queue = append(l.queue, p)
	}
}

// recv returns what has arrived by now, in arrival order.
func (l *link) recv(now time.Time) [][]byte {
	slices.SortStableFunc(l.queue, func(a, b packet) int {
		if c := a.at.Compare(b.at); c != 0 {
			return c
		}
		return a.n - b.n
	})
	var out [][]byte
	i := 0
	for ; i < len(l.queue) && !l.queue[i].at.After(now); i++ {
		out = append(out, l.queue[i].b)
		l.delivered++
		if l.queue[i].corrupt {
			l.corrupted++
		}
	}
	l.queue = l.queue[i:]
	return out
}

// kill loses everything in flight and everything sent later.
func (l *link) kill() { l.cut, l.queue = true, nil }

// device generates samples of every type. Each payload starts with a
// unique id, so a delivery can be checked against what was sent.
type device struct {
	rng     *rand.Rand
	tx      *Sender
	id      uint64
	backlog []frame.Frame // refused for a full window; sent again later
	// What was sent, by lane and sequence.
	rel, be map[uint64][]byte
	refused int
}

func newDevice(seed uint64, o SenderOptions) *device {
	return &device{rng: rand.New(rand.NewPCG(seed, 1)), tx: NewSender(o), rel: map[uint64][]byte{}, be: map[uint64][]byte{}}
}

var dataTypes = []frame.Type{frame.TypeECG, frame.TypeECG, frame.TypeECG, frame.TypeSpO2, frame.TypeBloodPressure,
	frame.TypeCardiacArrest, frame.TypeDeviceStatus, frame.TypeDeviceStatus, frame.TypeHistorySync}

// tick samples up to n new frames and sends them, with any backlog,
// over up.
func (d *device) tick(t *testing.T, up *link, now time.Time, n int) {
	for range d.rng.IntN(n + 1) {
		d.id++
		p := binary.BigEndian.AppendUint64(nil, d.id)
		p = append(p, make([]byte, d.rng.IntN(40))...)
		d.backlog = append(d.backlog, frame.New(dataTypes[d.rng.IntN(len(dataTypes))], now, p))
	}
	keep := d.backlog[:0]
	for _, f := range d.backlog {
		out, err := d.tx.Send(f, now)
		if errors.Is(err, ErrWindowFull) {
			d.refused++
			keep = append(keep, f)
			continue
		}
		if err != nil {
			t.Fatalf("Send: %v", err)
		}
		if out.Flags&frame.Reliable != 0 {
			d.rel[out.Seq] = out.Payload
		} else {
			d.be[out.Seq] = out.Payload
		}
		sendFrames(t, up, now, out)
	}
	d.backlog = keep
}

// control feeds what came back over down to the Sender, and sends what
// the Sender resends.
func (d *device) control(t *testing.T, up, down *link, now time.Time) (corrupt int) {
	for _, raw := range down.recv(now) {
		f, err := frame.Decode(raw)
		if err != nil {
			corrupt++
			continue
		}
		out, err := d.tx.OnControl(f, now)
		if err != nil {
			t.Fatalf("OnControl(%s %d): %v", f.Type, f.Seq, err)
		}
		sendFrames(t, up, now, out...)
	}
	sendFrames(t, up, now, d.tx.Due(now)...)
	return corrupt
}

func sendFrames(t *testing.T, l *link, now time.Time, fs ...frame.Frame) {
	t.Helper()
	for _, f := range fs {
		b, err := frame.Append(nil, f)
		if err != nil {
			t.Fatalf("Append(%s): %v", f.Type, err)
		}
		l.send(b, now)
	}
}

// sink records what a receiver delivered, per lane, and checks it as it
// goes: the reliable lane in order without repeats, the best-effort lane
// strictly increasing, each payload the one sent with that sequence.
type sink struct {
	rel, be []uint64
}

func (s *sink) take(t *testing.T, d *device, fs []frame.Frame) {
	t.Helper()
	for _, f := range fs {
		lane, sent, name := &s.be, d.be, "best-effort"
		if f.Flags&frame.Reliable != 0 {
			lane, sent, name = &s.rel, d.rel, "reliable"
		}
		if n := len(*lane); n > 0 && f.Seq <= (*lane)[n-1] {
			t.Fatalf("%s frame %d delivered after %d", name, f.Seq, (*lane)[n-1])
		}
		if want, ok := sent[f.Seq]; !ok || string(want) != string(f.Payload) {
			t.Fatalf("%s frame %d delivered with a payload that was not sent with it", name, f.Seq)
		}
		*lane = append(*lane, f.Seq)
	}
}

// complete checks that the reliable lane delivered 1..n exactly once.
func (s *sink) complete(t *testing.T, n int) {
	t.Helper()
	if len(s.rel) != n {
		t.Fatalf("%d reliable frames delivered, %d sent", len(s.rel), n)
	}
	for i, seq := range s.rel {
		if seq != uint64(i+1) {
			t.Fatalf("reliable delivery %d is frame %d", i, seq)
		}
	}
}

// peer is a vitals instance: a Receiver behind a link pair.
type peer struct {
	rx       *Receiver
	up, down *link
}

// tick delivers what arrived at the peer, answers, and (every flushEvery
// ticks, if set) flushes held-back acks.
func (p *peer) tick(t *testing.T, now time.Time, i, flushEvery int) []frame.Frame {
	var out []frame.Frame
	for _, raw := range p.up.recv(now) {
		d, c, err := p.rx.Accept(raw, now)
		if err != nil && !errors.Is(err, frame.ErrCorrupt) && !errors.Is(err, frame.ErrTruncated) &&
			!errors.Is(err, frame.ErrTrailing) && !errors.Is(err, frame.ErrMagic) && !errors.Is(err, frame.ErrVersion) &&
			!errors.Is(err, frame.ErrTooLong) {
			t.Fatalf("Accept: %v (only link damage is expected)", err)
		}
		out = append(out, d...)
		sendFrames(t, p.down, now, c...)
	}
	if flushEvery > 0 && i%flushEvery == 0 {
		sendFrames(t, p.down, now, p.rx.Flush(now)...)
	}
	return out
}

const tick = 10 * time.Millisecond

// Over a link that drops, duplicates, reorders and corrupts in both
// directions, every reliable frame is delivered exactly once and in order,
// best-effort frames never out of order or twice, and every damaged frame
// is counted and none delivered. Midway the device reconnects to the same
// receiver (Resume), as after a dropped connection.
func TestFaultyLink(t *testing.T) {
	for _, c := range []struct {
		name       string
		seed       uint64
		ackEvery   int
		flushEvery int
		window     int
		rate       int // most samples per tick
	}{
		{"ack every frame", 1, 1, 0, 0, 3},
		{"coalesced acks", 2, 4, 10, 0, 3},
		{"small window", 3, 1, 0, 16, 1},
		{"coalesced acks, small window", 4, 8, 5, 16, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			now := t0
			d := newDevice(c.seed, SenderOptions{Window: c.window, ResendAfter: 300 * time.Millisecond})
			p := &peer{
				rx:   NewReceiver(ReceiverOptions{Acks: true, AckEvery: c.ackEvery}),
				up:   newLink(c.seed, 0.1, 0.05, 0.05, 80*time.Millisecond),
				down: newLink(c.seed+100, 0.1, 0.05, 0.05, 80*time.Millisecond),
			}
			var got sink
			senderCorrupt := 0
			sendFrames(t, p.up, now, d.tx.Resume(now)...)
			const ticks = 3000
			for i := 0; i < ticks || d.tx.Stats().Unacked > 0 || len(d.backlog) > 0; i++ {
				if i > 100*ticks {
					t.Fatalf("not drained: %+v", d.tx.Stats())
				}
				now = now.Add(tick)
				d.tick(t, p.up, now, min(c.rate, max(0, ticks-i))) // after ticks, only the backlog
				if i == ticks/2 {
					sendFrames(t, p.up, now, d.tx.Resume(now)...)
				}
				got.take(t, d, p.tick(t, now, i, c.flushEvery))
				senderCorrupt += d.control(t, p.up, p.down, now)
			}
			// Let the last packets in flight land.
			for range 20 {
				now = now.Add(tick)
				got.take(t, d, p.tick(t, now, 1, 1))
				senderCorrupt += d.control(t, p.up, p.down, now)
			}
			got.complete(t, len(d.rel))
			rs, ss := p.rx.Stats(), d.tx.Stats()
			if rs.Corrupt != uint64(p.up.corrupted) || senderCorrupt != p.down.corrupted {
				t.Fatalf("damaged frames: receiver counted %d of %d, sender side %d of %d",
					rs.Corrupt, p.up.corrupted, senderCorrupt, p.down.corrupted)
			}
			if rs.DeliveredReliable != uint64(len(d.rel)) || rs.Delivered != uint64(len(got.rel)+len(got.be)) {
				t.Fatalf("stats say %d delivered (%d reliable), the sink got %d and %d", rs.Delivered, rs.DeliveredReliable, len(got.rel), len(got.be))
			}
			// The simulation exercised what it is meant to.
			if rs.Corrupt == 0 || rs.Duplicates == 0 || rs.Buffered == 0 || rs.ResendRequests == 0 || rs.Acks == 0 ||
				ss.Resends == 0 || ss.ResendRequests == 0 || len(got.be) == 0 || len(got.be) == len(d.be) {
				t.Fatalf("the link did not exercise every path: receiver %+v, sender %+v, best-effort %d of %d",
					rs, ss, len(got.be), len(d.be))
			}
			if c.window > 0 && d.refused == 0 {
				t.Fatal("the small window never filled")
			}
			t.Logf("%d reliable and %d of %d best-effort frames delivered; receiver %+v; sender %+v; %d refusals",
				len(got.rel), len(got.be), len(d.be), rs, ss, d.refused)
		})
	}
}

// Failover: the device streams to instance A, whose acks stop reaching it
// (so A delivers frames it never acknowledges), A dies, and the device
// resumes to a fresh instance B. A subscriber downstream receives what A
// and B forward, interleaved, and with an order-only Receiver gets every
// reliable frame exactly once and in order.
func TestFailover(t *testing.T) {
	now := t0
	d := newDevice(7, SenderOptions{ResendAfter: 300 * time.Millisecond})
	newPeer := func(seed uint64) *peer {
		return &peer{
			rx:   NewReceiver(ReceiverOptions{Acks: true, AckEvery: 4}),
			up:   newLink(seed, 0.05, 0.02, 0.02, 50*time.Millisecond),
			down: newLink(seed+100, 0.05, 0.02, 0.02, 50*time.Millisecond),
		}
	}
	a := newPeer(70)
	// What each instance forwards to the subscriber: a stream per
	// instance, in delivery order, each frame arriving after a random
	// delay but never before the one ahead of it. A's path is slow (up to
	// 2 s), B's fast (up to 100 ms), so B's first frames overtake A's tail.
	var fwd []packet
	rng := rand.New(rand.NewPCG(9, 9))
	var lastA, lastB time.Time
	forward := func(last *time.Time, fs []frame.Frame, now time.Time, maxDelay time.Duration) {
		for _, f := range fs {
			b, err := frame.Append(nil, f)
			if err != nil {
				t.Fatal(err)
			}
			*last = maxTime(*last, now.Add(time.Duration(rng.Int64N(int64(maxDelay)))))
			fwd = append(fwd, packet{at: *last, n: len(fwd), b: b})
		}
	}
	var viaA, viaB sink
	sendFrames(t, a.up, now, d.tx.Resume(now)...)
	i := 0
	for ; i < 1000; i++ {
		now = now.Add(tick)
		if i == 900 {
			a.down.kill() // A's acks stop reaching the device
		}
		d.tick(t, a.up, now, 3)
		out := a.tick(t, now, i, 10)
		viaA.take(t, d, out)
		forward(&lastA, out, now, 2*time.Second)
		d.control(t, a.up, a.down, now)
	}
	a.up.kill() // A dies; what was in flight to it is lost
	if st := d.tx.Stats(); uint64(len(viaA.rel)) <= st.Acked {
		t.Fatalf("A delivered %d reliable frames, %d acknowledged: the test needs some delivered but unacknowledged", len(viaA.rel), st.Acked)
	}
	// The device keeps sampling into the dead connection for a while.
	for range 30 {
		now = now.Add(tick)
		i++
		d.tick(t, a.up, now, 3)
		d.control(t, a.up, a.down, now)
	}
	b := newPeer(80)
	sendFrames(t, b.up, now, d.tx.Resume(now)...)
	for start := i; i < start+1000 || d.tx.Stats().Unacked > 0 || len(d.backlog) > 0; i++ {
		if i > start+100000 {
			t.Fatalf("not drained: %+v", d.tx.Stats())
		}
		now = now.Add(tick)
		d.tick(t, b.up, now, min(3, max(0, start+1000-i)))
		out := b.tick(t, now, i, 10)
		viaB.take(t, d, out)
		forward(&lastB, out, now, 100*time.Millisecond)
		d.control(t, b.up, b.down, now)
	}
	if len(viaB.rel) == 0 || viaB.rel[0] > viaA.rel[len(viaA.rel)-1] {
		t.Fatalf("B started at %v, A ended at %d: no overlap to deduplicate", viaB.rel[:1], viaA.rel[len(viaA.rel)-1])
	}

	// The subscriber reads both streams as they arrive: A's tail lands
	// among B's first frames.
	slices.SortStableFunc(fwd, func(a, b packet) int { return a.at.Compare(b.at) })
	sub := NewReceiver(ReceiverOptions{})
	var got sink
	for _, p := range fwd {
		deliver, control, err := sub.Accept(p.b, p.at)
		if err != nil || control != nil {
			t.Fatalf("subscriber: %v, control %v", err, control)
		}
		got.take(t, d, deliver)
	}
	got.complete(t, len(d.rel))
	st := sub.Stats()
	if st.Duplicates == 0 || st.Buffered == 0 || st.Skipped != 0 {
		t.Fatalf("subscriber stats %+v: want duplicates (A and B overlap), frames held (B overtakes A) and nothing skipped", st)
	}
	t.Logf("A delivered reliable 1..%d, B %d..%d; subscriber %+v", viaA.rel[len(viaA.rel)-1], viaB.rel[0], viaB.rel[len(viaB.rel)-1], st)
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
