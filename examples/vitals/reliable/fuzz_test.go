package reliable

import (
	"testing"
	"time"

	"medmesh/examples/vitals/frame"
)

// FuzzAccept feeds arbitrary byte strings, cut into raw frames, to an
// acking Receiver and an order-only one with a small reorder buffer. They
// must never panic, never deliver a lane out of order or twice, never
// deliver a control frame, hold no more than ReorderLimit frames, and
// produce only control frames that encode.
//
// The input is a sequence of chunks, each a length byte and that many
// bytes; the clock moves 10 ms per chunk.
func FuzzAccept(f *testing.F) {
	chunks := func(fs ...frame.Frame) []byte {
		var out []byte
		for _, fr := range fs {
			b, err := frame.Append(nil, fr)
			if err != nil {
				f.Fatal(err)
			}
			out = append(append(out, byte(len(b))), b...)
		}
		return out
	}
	r := func(seq uint64) frame.Frame {
		fr := frame.New(frame.TypeECG, t0, []byte{1, 2})
		fr.Flags, fr.Seq = frame.Reliable, seq
		return fr
	}
	b := func(seq uint64) frame.Frame {
		fr := frame.New(frame.TypeDeviceStatus, t0, nil)
		fr.Seq = seq
		return fr
	}
	f.Add(chunks(frame.NewHello(1, 1, t0), r(1), r(3), r(2), b(2), b(1), r(3)))
	f.Add(chunks(r(5), frame.NewHello(4, 1, t0), r(4), r(20), r(6), frame.NewHello(9, 3, t0)))
	f.Add(chunks(frame.NewHello(1<<63, 1<<63, t0), r(1<<63), r(1<<64-1), frame.NewAck(3, t0)))
	f.Add(append(chunks(frame.NewHello(1, 1, t0)), 3, 'V', 'F', 1))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, in []byte) {
		const limit = 8
		acking := NewReceiver(ReceiverOptions{Acks: true, AckEvery: 2, ReorderLimit: limit})
		subscriber := NewReceiver(ReceiverOptions{ReorderLimit: limit})
		type lanes struct{ rel, be uint64 }
		last := map[*Receiver]*lanes{acking: {}, subscriber: {}}
		now := t0
		for len(in) > 0 {
			n := min(int(in[0]), len(in)-1)
			raw := in[1 : 1+n]
			in = in[1+n:]
			now = now.Add(10 * time.Millisecond)
			for rx, l := range last {
				deliver, control, _ := rx.Accept(raw, now)
				if rx == acking {
					control = append(control, rx.Flush(now)...)
				}
				for _, d := range deliver {
					lane := &l.be
					if d.Flags&frame.Reliable != 0 {
						lane = &l.rel
					}
					if d.Type.Control() {
						t.Fatalf("delivered a %s frame", d.Type)
					}
					if *lane != 0 && d.Seq <= *lane {
						t.Fatalf("delivered %d after %d in one lane", d.Seq, *lane)
					}
					*lane = d.Seq
				}
				if rx == subscriber && len(control) > 0 {
					t.Fatalf("an order-only receiver sent %d control frames", len(control))
				}
				for _, c := range control {
					if _, err := frame.Append(nil, c); err != nil {
						t.Fatalf("control frame does not encode: %v", err)
					}
				}
				if st := rx.Stats(); st.Held > limit {
					t.Fatalf("%d frames held, limit %d", st.Held, limit)
				}
			}
		}
	})
}
