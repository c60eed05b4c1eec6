package reliable

import (
	"errors"
	"testing"
	"time"

	"medmesh/examples/vitals/frame"
)

var t0 = time.Date(2026, 3, 14, 9, 0, 0, 0, time.UTC)

func at(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }

func sample(t frame.Type, b ...byte) frame.Frame { return frame.New(t, t0, b) }

func mustSend(t *testing.T, s *Sender, f frame.Frame, now time.Time) frame.Frame {
	t.Helper()
	out, err := s.Send(f, now)
	if err != nil {
		t.Fatalf("Send(%s): %v", f.Type, err)
	}
	return out
}

func seqs(fs []frame.Frame) []uint64 {
	var out []uint64
	for _, f := range fs {
		out = append(out, f.Seq)
	}
	return out
}

func equalSeqs(a []uint64, b ...uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Each lane numbers its own frames from 1; the priority picks the lane.
func TestSenderLanes(t *testing.T) {
	s := NewSender(SenderOptions{})
	ecg := mustSend(t, s, sample(frame.TypeECG, 1), t0)
	status := mustSend(t, s, sample(frame.TypeDeviceStatus, 2), t0)
	alarm := mustSend(t, s, sample(frame.TypeCardiacArrest), t0)
	history := mustSend(t, s, sample(frame.TypeHistorySync, 3), t0)
	lowered := sample(frame.TypeSpO2)
	lowered.Priority = frame.Medium // a caller may demote; the lane follows
	bp := mustSend(t, s, lowered, t0)
	for _, c := range []struct {
		f        frame.Frame
		seq      uint64
		reliable bool
	}{{ecg, 1, true}, {status, 1, false}, {alarm, 2, true}, {history, 2, false}, {bp, 3, false}} {
		if c.f.Seq != c.seq || (c.f.Flags == frame.Reliable) != c.reliable || c.f.Flags&^frame.Reliable != 0 {
			t.Errorf("%s: seq %d flags %s, want seq %d reliable=%v", c.f.Type, c.f.Seq, c.f.Flags, c.seq, c.reliable)
		}
	}
	if st := s.Stats(); st.Sent != 5 || st.SentReliable != 2 || st.Unacked != 2 {
		t.Errorf("stats %+v", st)
	}
}

// Send keeps its own copy of a reliable payload.
func TestSenderCopiesPayload(t *testing.T) {
	s := NewSender(SenderOptions{})
	buf := []byte{1, 2, 3}
	mustSend(t, s, frame.New(frame.TypeECG, t0, buf), t0)
	buf[0] = 9
	if got := s.Resume(t0)[1].Payload[0]; got != 1 {
		t.Fatalf("resent payload changed with the caller's buffer: %d", got)
	}
}

func TestSenderRefuses(t *testing.T) {
	s := NewSender(SenderOptions{})
	if _, err := s.Send(frame.NewAck(1, t0), t0); !errors.Is(err, ErrNotData) {
		t.Errorf("Send(ack): %v, want ErrNotData", err)
	}
	big := sample(frame.TypeECG)
	big.Payload = make([]byte, frame.MaxPayload+1)
	if _, err := s.Send(big, t0); !errors.Is(err, ErrNotData) || !errors.Is(err, frame.ErrTooLong) {
		t.Errorf("Send(too long): %v, want ErrNotData wrapping frame.ErrTooLong", err)
	}
	if st := s.Stats(); st.Sent != 0 {
		t.Errorf("refused frames were numbered: %+v", st)
	}
}

// A full window refuses visibly, keeps room for CRITICAL, and never
// refuses best-effort frames; an Ack makes room again.
func TestSenderWindow(t *testing.T) {
	s := NewSender(SenderOptions{Window: 4, CriticalReserve: 1})
	for range 3 {
		mustSend(t, s, sample(frame.TypeECG), t0)
	}
	if _, err := s.Send(sample(frame.TypeSpO2), t0); !errors.Is(err, ErrWindowFull) {
		t.Fatalf("4th HIGH frame: %v, want ErrWindowFull", err)
	}
	alarm := mustSend(t, s, sample(frame.TypeCardiacArrest), t0)
	if alarm.Seq != 4 {
		t.Fatalf("alarm got seq %d, want 4 (the refused frame took no number)", alarm.Seq)
	}
	if _, err := s.Send(sample(frame.TypeCardiacArrest), t0); !errors.Is(err, ErrWindowFull) {
		t.Fatalf("CRITICAL past the window: %v, want ErrWindowFull", err)
	}
	mustSend(t, s, sample(frame.TypeDeviceStatus), t0)
	if st := s.Stats(); st.Refused != 2 || st.Unacked != 4 {
		t.Fatalf("stats %+v", st)
	}
	if _, err := s.OnControl(frame.NewAck(2, t0), t0); err != nil {
		t.Fatal(err)
	}
	if f := mustSend(t, s, sample(frame.TypeECG), t0); f.Seq != 5 {
		t.Fatalf("after the ack: seq %d, want 5", f.Seq)
	}
}

func TestSenderAckAndResendRequest(t *testing.T) {
	s := NewSender(SenderOptions{ResendAfter: time.Second})
	for range 5 {
		mustSend(t, s, sample(frame.TypeECG), t0)
	}
	if _, err := s.OnControl(frame.NewAck(2, at(10)), at(10)); err != nil {
		t.Fatal(err)
	}
	out, err := s.OnControl(frame.NewResendRequest(4, at(20)), at(20))
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 1 || out[0].Seq != 4 || out[0].Flags != frame.Reliable|frame.Resent {
		t.Fatalf("resend request for 4 returned %v", seqs(out))
	}
	if st := s.Stats(); st.Acked != 3 || st.Unacked != 2 || st.Acks != 1 || st.ResendRequests != 1 || st.Resends != 1 {
		t.Fatalf("stats %+v, want 3 acknowledged (the request acknowledges below 4), 4 and 5 held", st)
	}
	// Stale control frames change nothing.
	for _, c := range []frame.Frame{frame.NewAck(1, t0), frame.NewResendRequest(2, t0)} {
		if out, err := s.OnControl(c, at(30)); err != nil || len(out) != 0 {
			t.Fatalf("stale %s: %v %v", c.Type, seqs(out), err)
		}
	}
	// A request for the next unsent frame (after a corrupt frame) is an ack.
	if out, err := s.OnControl(frame.NewResendRequest(6, t0), at(40)); err != nil || len(out) != 0 || s.Stats().Unacked != 0 {
		t.Fatalf("request for the next frame: %v %v, %d held", seqs(out), err, s.Stats().Unacked)
	}
	for _, c := range []frame.Frame{frame.NewAck(6, t0), frame.NewResendRequest(7, t0), sample(frame.TypeECG), frame.NewHello(1, 1, t0)} {
		if _, err := s.OnControl(c, at(50)); !errors.Is(err, ErrBadControl) {
			t.Errorf("OnControl(%s seq %d): %v, want ErrBadControl", c.Type, c.Seq, err)
		}
	}
}

// Due resends what has waited ResendAfter, each once per timeout, after
// a Hello.
func TestSenderDue(t *testing.T) {
	s := NewSender(SenderOptions{ResendAfter: 100 * time.Millisecond})
	if got := s.Resume(t0); len(got) != 1 || got[0].Type != frame.TypeHello {
		t.Fatalf("Resume on a new stream: %d frames", len(got))
	}
	if got := s.Due(at(1000)); len(got) != 0 {
		t.Fatalf("due with nothing unacknowledged: %v", got)
	}
	mustSend(t, s, sample(frame.TypeECG), at(0))
	mustSend(t, s, sample(frame.TypeECG), at(50))
	mustSend(t, s, sample(frame.TypeDeviceStatus), at(50))
	if got := s.Due(at(99)); len(got) != 0 {
		t.Fatalf("due before the timeout: %v", seqs(got))
	}
	got := s.Due(at(100))
	if len(got) != 2 || got[0].Type != frame.TypeHello || got[1].Seq != 1 || got[1].Flags&frame.Resent == 0 {
		t.Fatalf("due at 100ms: %v, want a hello and frame 1", got)
	}
	if r, b := got[0].HelloSeqs(); r != 1 || b != 2 {
		t.Fatalf("hello says %d, %d; want 1, 2", r, b)
	}
	if got := s.Due(at(150)); len(got) != 2 || got[1].Seq != 2 {
		t.Fatalf("due at 150ms: %v, want a hello and frame 2", got)
	}
	if _, err := s.OnControl(frame.NewAck(1, t0), at(160)); err != nil {
		t.Fatal(err)
	}
	got = s.Due(at(250))
	if r, _ := got[0].HelloSeqs(); len(got) != 2 || r != 2 || got[1].Seq != 2 {
		t.Fatalf("due at 250ms after ack 1: %v, want a hello from 2 and frame 2", got)
	}
	if st := s.Stats(); st.Hellos != 4 || st.Resends != 3 {
		t.Fatalf("stats %+v", st)
	}
}

// Resume: a Hello from the last acknowledged sequence, then everything
// unacknowledged, in order.
func TestSenderResume(t *testing.T) {
	s := NewSender(SenderOptions{})
	for range 4 {
		mustSend(t, s, sample(frame.TypeECG), t0)
		mustSend(t, s, sample(frame.TypeDeviceStatus), t0)
	}
	if _, err := s.OnControl(frame.NewAck(2, t0), t0); err != nil {
		t.Fatal(err)
	}
	out := s.Resume(at(10))
	if len(out) != 3 || out[0].Type != frame.TypeHello || !equalSeqs(seqs(out[1:]), 3, 4) {
		t.Fatalf("Resume returned %v", out)
	}
	if r, b := out[0].HelloSeqs(); r != 3 || b != 5 {
		t.Fatalf("hello says %d, %d; want 3 (oldest unacknowledged), 5 (next best-effort)", r, b)
	}
	for _, f := range out[1:] {
		if f.Flags != frame.Reliable|frame.Resent {
			t.Errorf("resumed frame %d flags %s", f.Seq, f.Flags)
		}
	}
}
