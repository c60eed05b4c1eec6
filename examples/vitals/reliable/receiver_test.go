package reliable

import (
	"errors"
	"testing"
	"time"

	"medmesh/examples/vitals/frame"
)

func enc(t *testing.T, f frame.Frame) []byte {
	t.Helper()
	b, err := frame.Append(nil, f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func rel(seq uint64, ty frame.Type) frame.Frame {
	f := frame.New(ty, t0, []byte{byte(seq)})
	f.Flags, f.Seq = frame.Reliable, seq
	return f
}

func bestEffort(seq uint64) frame.Frame {
	f := frame.New(frame.TypeDeviceStatus, t0, []byte{byte(seq)})
	f.Seq = seq
	return f
}

// accept feeds one frame and returns the delivered sequences and the
// control frames.
func accept(t *testing.T, r *Receiver, f frame.Frame, now time.Time) ([]uint64, []frame.Frame) {
	t.Helper()
	d, c, err := r.Accept(enc(t, f), now)
	if err != nil {
		t.Fatalf("Accept(%s %d): %v", f.Type, f.Seq, err)
	}
	return seqs(d), c
}

func isCtl(c []frame.Frame, ty frame.Type, seq uint64) bool {
	return len(c) == 1 && c[0].Type == ty && c[0].Seq == seq
}

// With Acks, nothing in the reliable lane is delivered before the Hello:
// the first frame to arrive need not be the first sent.
func TestReceiverWaitsForHello(t *testing.T) {
	r := NewReceiver(ReceiverOptions{Acks: true})
	if d, c := accept(t, r, rel(6, frame.TypeECG), t0); d != nil || c != nil {
		t.Fatalf("before the hello: delivered %v, control %v", d, c)
	}
	if d, _ := accept(t, r, bestEffort(3), t0); !equalSeqs(d, 3) {
		t.Fatalf("best-effort before the hello: %v, want it delivered", d)
	}
	_, c := accept(t, r, frame.NewHello(5, 2, t0), t0)
	if !isCtl(c, frame.TypeAck, 4) {
		t.Fatalf("hello answered with %v, want ack 4", c)
	}
	if d, c := accept(t, r, rel(5, frame.TypeECG), t0); !equalSeqs(d, 5) || !isCtl(c, frame.TypeAck, 5) {
		t.Fatalf("frame 5: %v %v", d, c)
	}
	if st := r.Stats(); st.Dropped != 1 || st.Hellos != 1 || st.Delivered != 2 {
		t.Fatalf("stats %+v", st)
	}
}

// A gap holds later frames and asks once for the missing one; filling
// it delivers everything in order with one cumulative ack.
func TestReceiverGap(t *testing.T) {
	r := NewReceiver(ReceiverOptions{Acks: true, RequestInterval: 100 * time.Millisecond})
	accept(t, r, frame.NewHello(1, 1, t0), t0)
	accept(t, r, rel(1, frame.TypeECG), t0)
	d, c := accept(t, r, rel(3, frame.TypeECG), at(1))
	if d != nil || !isCtl(c, frame.TypeResendRequest, 2) {
		t.Fatalf("frame 3 past a gap: %v %v, want held and resend request 2", d, c)
	}
	if d, c := accept(t, r, rel(4, frame.TypeECG), at(2)); d != nil || c != nil {
		t.Fatalf("frame 4: %v %v, want held, no second request within the interval", d, c)
	}
	if d, c := accept(t, r, rel(4, frame.TypeECG), at(3)); d != nil || c != nil {
		t.Fatalf("duplicate of a held frame: %v %v", d, c)
	}
	if c := r.Flush(at(102)); !isCtl(c, frame.TypeResendRequest, 2) {
		t.Fatalf("Flush after the interval: %v, want the request repeated", c)
	}
	d, c = accept(t, r, rel(2, frame.TypeECG), at(110))
	if !equalSeqs(d, 2, 3, 4) || !isCtl(c, frame.TypeAck, 4) {
		t.Fatalf("gap filled: %v %v, want 2 3 4 and ack 4", d, c)
	}
	if st := r.Stats(); st.Buffered != 2 || st.Held != 0 || st.Duplicates != 1 || st.ResendRequests != 2 || st.DeliveredReliable != 4 {
		t.Fatalf("stats %+v", st)
	}
}

// A duplicate of a delivered frame means the sender missed our ack:
// ack again at once.
func TestReceiverDuplicateReacks(t *testing.T) {
	r := NewReceiver(ReceiverOptions{Acks: true, AckEvery: 100})
	accept(t, r, frame.NewHello(1, 1, t0), t0)
	accept(t, r, rel(1, frame.TypeECG), t0)
	accept(t, r, rel(2, frame.TypeECG), t0)
	if d, c := accept(t, r, rel(1, frame.TypeECG), t0); d != nil || !isCtl(c, frame.TypeAck, 2) {
		t.Fatalf("duplicate: %v %v, want nothing delivered and ack 2", d, c)
	}
}

// Acks are coalesced to AckEvery, except for CRITICAL frames; Flush
// sends the held-back one.
func TestReceiverAckCoalescing(t *testing.T) {
	r := NewReceiver(ReceiverOptions{Acks: true, AckEvery: 3})
	accept(t, r, frame.NewHello(1, 1, t0), t0)
	if _, c := accept(t, r, rel(1, frame.TypeECG), t0); c != nil {
		t.Fatalf("ack after 1 of 3: %v", c)
	}
	if _, c := accept(t, r, rel(2, frame.TypeCardiacArrest), t0); !isCtl(c, frame.TypeAck, 2) {
		t.Fatalf("an alarm is acknowledged at once: %v", c)
	}
	accept(t, r, rel(3, frame.TypeECG), t0)
	accept(t, r, rel(4, frame.TypeECG), t0)
	if _, c := accept(t, r, rel(5, frame.TypeECG), t0); !isCtl(c, frame.TypeAck, 5) {
		t.Fatalf("ack after 3: %v", c)
	}
	accept(t, r, rel(6, frame.TypeECG), t0)
	if c := r.Flush(t0); !isCtl(c, frame.TypeAck, 6) {
		t.Fatalf("Flush: %v, want ack 6", c)
	}
	if c := r.Flush(t0); c != nil {
		t.Fatalf("second Flush: %v, want nothing", c)
	}
}

// The best-effort lane delivers newer frames at once, drops older and
// repeated ones, and never waits for a reliable gap.
func TestReceiverBestEffort(t *testing.T) {
	r := NewReceiver(ReceiverOptions{Acks: true})
	accept(t, r, frame.NewHello(1, 1, t0), t0)
	accept(t, r, rel(2, frame.TypeECG), t0) // reliable 1 is missing
	var got []uint64
	for _, s := range []uint64{2, 1, 5, 5, 4, 6} {
		d, _ := accept(t, r, bestEffort(s), t0)
		got = append(got, d...)
	}
	if !equalSeqs(got, 2, 5, 6) {
		t.Fatalf("best-effort delivered %v, want 2 5 6", got)
	}
	if st := r.Stats(); st.Stale != 2 || st.Duplicates != 1 || st.Held != 1 {
		t.Fatalf("stats %+v", st)
	}
	// The best-effort lane never asks for resends.
	if st := r.Stats(); st.ResendRequests != 1 {
		t.Fatalf("%d resend requests, want the one for reliable 1", st.ResendRequests)
	}
}

// A corrupt or truncated frame is counted, never delivered, and asks for
// the first missing reliable frame.
func TestReceiverCorrupt(t *testing.T) {
	r := NewReceiver(ReceiverOptions{Acks: true})
	accept(t, r, frame.NewHello(1, 1, t0), t0)
	good := enc(t, rel(1, frame.TypeECG))
	flipped := append([]byte(nil), good...)
	flipped[frame.HeaderLen] ^= 0x10
	for i, raw := range [][]byte{flipped, good[:len(good)-1], good[:3]} {
		d, c, err := r.Accept(raw, at(i*200))
		if err == nil || d != nil || !isCtl(c, frame.TypeResendRequest, 1) {
			t.Fatalf("corrupt frame %d: %v %v %v", i, seqs(d), c, err)
		}
	}
	if !errors.Is(func() error { _, _, err := r.Accept(flipped, at(1000)); return err }(), frame.ErrCorrupt) {
		t.Fatal("the error does not say the CRC failed")
	}
	if st := r.Stats(); st.Corrupt != 4 || st.Delivered != 0 {
		t.Fatalf("stats %+v", st)
	}
	// Before the hello there is nothing to ask for.
	fresh := NewReceiver(ReceiverOptions{Acks: true})
	if _, c, _ := fresh.Accept(flipped, t0); c != nil {
		t.Fatalf("fresh receiver asked %v", c)
	}
}

func TestReceiverRefusesAckAndRequest(t *testing.T) {
	r := NewReceiver(ReceiverOptions{Acks: true})
	for _, f := range []frame.Frame{frame.NewAck(1, t0), frame.NewResendRequest(1, t0)} {
		if _, _, err := r.Accept(enc(t, f), t0); !errors.Is(err, ErrUnexpected) {
			t.Errorf("Accept(%s): %v, want ErrUnexpected", f.Type, err)
		}
	}
}

// With Acks, a frame past the reorder buffer is dropped for the sender to
// resend; without, the gap is given up.
func TestReceiverReorderLimit(t *testing.T) {
	r := NewReceiver(ReceiverOptions{Acks: true, ReorderLimit: 4})
	accept(t, r, frame.NewHello(1, 1, t0), t0)
	accept(t, r, rel(4, frame.TypeECG), t0)
	if d, _ := accept(t, r, rel(5, frame.TypeECG), t0); d != nil || r.Stats().Dropped != 1 || r.Stats().Held != 1 {
		t.Fatalf("frame 5 with expected 1 and limit 4: delivered %v, stats %+v", d, r.Stats())
	}

	sub := NewReceiver(ReceiverOptions{ReorderLimit: 4})
	accept(t, sub, rel(1, frame.TypeECG), t0)
	accept(t, sub, rel(3, frame.TypeECG), t0)
	d, c := accept(t, sub, rel(6, frame.TypeECG), t0)
	if !equalSeqs(d, 3) || c != nil {
		t.Fatalf("subscriber, frame 6 with expected 2: %v %v, want 3 delivered past the gap", d, c)
	}
	if d, _ := accept(t, sub, rel(2, frame.TypeECG), t0); d != nil {
		t.Fatalf("a given-up frame arrived late and was delivered: %v", d)
	}
	if d, _ := accept(t, sub, rel(4, frame.TypeECG), t0); !equalSeqs(d, 4) {
		t.Fatalf("frame 4: %v", d)
	}
	if st := sub.Stats(); st.Skipped != 1 || st.Held != 1 || st.Duplicates != 1 {
		t.Fatalf("stats %+v", st)
	}
	// A frame exactly ReorderLimit past moves the lane onto itself.
	if d, _ := accept(t, sub, rel(5+4+3, frame.TypeECG), t0); !equalSeqs(d, 6) {
		t.Fatalf("frame 12: %v, want 6 (held) delivered and 12 held", d)
	}
}

// Hello handling on a receiver that already has state: a resume from
// below changes nothing; a Hello ahead gives up the gap below it.
func TestReceiverHelloMoves(t *testing.T) {
	r := NewReceiver(ReceiverOptions{Acks: true})
	accept(t, r, frame.NewHello(1, 1, t0), t0)
	accept(t, r, rel(1, frame.TypeECG), t0)
	accept(t, r, rel(2, frame.TypeECG), t0)
	accept(t, r, rel(4, frame.TypeECG), t0)
	accept(t, r, bestEffort(7), t0)
	if d, c := accept(t, r, frame.NewHello(2, 8, t0), at(1)); d != nil || len(c) == 0 || c[len(c)-1].Type != frame.TypeAck || c[len(c)-1].Seq != 2 {
		t.Fatalf("hello from 2: %v %v, want nothing delivered and ack 2", d, c)
	}
	if d, _ := accept(t, r, rel(2, frame.TypeECG), t0); d != nil {
		t.Fatalf("resent frame 2 delivered again: %v", d)
	}
	d, c := accept(t, r, frame.NewHello(7, 9, t0), at(2))
	if !equalSeqs(d, 4) || !isCtl(c, frame.TypeAck, 6) {
		t.Fatalf("hello from 7: %v %v, want held 4 delivered and ack 6", d, c)
	}
	if d, _ := accept(t, r, bestEffort(8), t0); d != nil {
		t.Fatalf("best-effort 8 after a hello saying 9 comes next: delivered %v", d)
	}
	if st := r.Stats(); st.Skipped != 3 {
		t.Fatalf("skipped %d, want 3 (3, 5 and 6)", st.Skipped)
	}
	// A Hello far ahead costs nothing per skipped sequence.
	accept(t, r, frame.NewHello(1<<62, 9, t0), t0)
	if d, _ := accept(t, r, rel(1<<62, frame.TypeECG), t0); !equalSeqs(d, 1<<62) {
		t.Fatalf("after a far hello: %v", d)
	}
}

// Delivered payloads do not alias the caller's buffer.
func TestReceiverCopiesPayload(t *testing.T) {
	r := NewReceiver(ReceiverOptions{})
	raw := enc(t, rel(1, frame.TypeECG))
	d, _, err := r.Accept(raw, t0)
	if err != nil || len(d) != 1 {
		t.Fatal(err)
	}
	raw[frame.HeaderLen] = 0xEE
	if d[0].Payload[0] == 0xEE {
		t.Fatal("delivered payload aliases the raw buffer")
	}
}

// A lost Hello costs one resend timeout: the receiver drops reliable
// frames until it has one, and the sender's next batch of resends starts
// with one.
func TestLostHello(t *testing.T) {
	s := NewSender(SenderOptions{ResendAfter: 100 * time.Millisecond})
	r := NewReceiver(ReceiverOptions{Acks: true})
	_ = s.Resume(t0) // lost
	for range 2 {
		if d, _ := accept(t, r, mustSend(t, s, sample(frame.TypeECG, 1), t0), t0); d != nil {
			t.Fatalf("delivered %v before any hello", d)
		}
	}
	var got []uint64
	for _, f := range s.Due(at(100)) {
		d, c := accept(t, r, f, at(100))
		got = append(got, d...)
		for _, c := range c {
			if _, err := s.OnControl(c, at(100)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if !equalSeqs(got, 1, 2) || s.Stats().Unacked != 0 {
		t.Fatalf("after the resend batch: delivered %v, %d unacknowledged", got, s.Stats().Unacked)
	}
}
