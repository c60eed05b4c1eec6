package frame

import (
	"bytes"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"

	"medmesh/sidecar/classify"
)

// The CRC is CRC-16/CCITT-FALSE: its published check value.
func TestCRCCheckValue(t *testing.T) {
	if got := crc16([]byte("123456789")); got != 0x29B1 {
		t.Fatalf("crc16(\"123456789\") = %#04x, want 0x29b1", got)
	}
	if got := crc16(nil); got != 0xFFFF {
		t.Fatalf("crc16 of nothing = %#04x, want the initial value 0xffff", got)
	}
}

var t0 = time.Date(2026, 3, 14, 9, 26, 53, 589793238, time.UTC)

func TestRoundTrip(t *testing.T) {
	frames := []Frame{
		{Type: TypeECG, Priority: High, Flags: Reliable, Seq: 1, DeviceTime: t0, Payload: []byte{1, 2, 3}},
		{Type: TypeCardiacArrest, Priority: Critical, Flags: Reliable | Resent, Seq: 1<<64 - 1, DeviceTime: t0},
		{Type: TypeDeviceStatus, Priority: Background, Seq: 7, Payload: bytes.Repeat([]byte{0xAB}, MaxPayload)},
		{Type: TypeHistorySync, Priority: Low, DeviceTime: time.Unix(0, -1).UTC()},
		NewHello(5, 9, t0),
		NewAck(0, t0),
		NewResendRequest(3, t0),
	}
	for _, f := range frames {
		b, err := Append([]byte("prefix"), f)
		if err != nil {
			t.Fatalf("Append(%s): %v", f.Type, err)
		}
		if string(b[:6]) != "prefix" || len(b) != 6+Overhead+len(f.Payload) {
			t.Fatalf("Append(%s) did not append %d bytes to dst", f.Type, Overhead+len(f.Payload))
		}
		got, err := Decode(b[6:])
		if err != nil {
			t.Fatalf("Decode(%s): %v", f.Type, err)
		}
		if got.Type != f.Type || got.Priority != f.Priority || got.Flags != f.Flags || got.Seq != f.Seq ||
			!got.DeviceTime.Equal(f.DeviceTime) || got.DeviceTime.IsZero() != f.DeviceTime.IsZero() || !bytes.Equal(got.Payload, f.Payload) {
			t.Fatalf("round trip of %s changed the frame: got %s/%s/%s seq %d at %v (%d bytes), want %s/%s/%s seq %d at %v (%d bytes)",
				f.Type, got.Type, got.Priority, got.Flags, got.Seq, got.DeviceTime, len(got.Payload),
				f.Type, f.Priority, f.Flags, f.Seq, f.DeviceTime, len(f.Payload))
		}
	}
}

// Decode's payload aliases its input but cannot grow into the trailer.
func TestDecodePayloadAliases(t *testing.T) {
	b, _ := Append(nil, New(TypeSpO2, t0, []byte{97, 72}))
	trailer := string(b[len(b)-TrailerLen:])
	f, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	b[HeaderLen] = 0
	if f.Payload[0] != 0 {
		t.Fatal("Payload does not alias the input, as documented")
	}
	_ = append(f.Payload, 0xEE, 0xEE)
	if string(b[len(b)-TrailerLen:]) != trailer {
		t.Fatal("appending to Payload overwrote the trailer")
	}
}

// encode builds a frame's bytes without validation, then lets mutate
// change them; fix recomputes the CRC afterwards.
func encode(t *testing.T, f Frame, mutate func([]byte), fix bool) []byte {
	t.Helper()
	b, err := Append(nil, f)
	if err != nil {
		t.Fatal(err)
	}
	if mutate != nil {
		mutate(b)
	}
	if fix {
		n := len(b) - TrailerLen
		be.PutUint16(b[n:], crc16(b[:n]))
	}
	return b
}

func TestDecodeErrors(t *testing.T) {
	ok := Frame{Type: TypeSpO2, Priority: High, Flags: Reliable, Seq: 42, DeviceTime: t0, Payload: []byte{97, 72}}
	good := encode(t, ok, nil, false)
	cases := []struct {
		name string
		b    []byte
		want error
		n    int // Split's n
	}{
		{"empty", nil, ErrTruncated, 0},
		{"one byte", good[:1], ErrTruncated, 0},
		{"header cut", good[:HeaderLen-1], ErrTruncated, 0},
		{"payload cut", good[:HeaderLen+1], ErrTruncated, 0},
		{"trailer cut", good[:len(good)-1], ErrTruncated, 0},
		{"trailing bytes", append(append([]byte{}, good...), 0), ErrTrailing, len(good)},
		{"two frames", append(append([]byte{}, good...), good...), ErrTrailing, len(good)},
		{"bad first magic byte", []byte{'X'}, ErrMagic, 0},
		{"bad magic", encode(t, ok, func(b []byte) { b[1] = 'G' }, true), ErrMagic, 0},
		{"version 2", encode(t, ok, func(b []byte) { b[offVersion] = 2 }, true), ErrVersion, 0},
		{"version 0 in a prefix", []byte{0x56, 0x46, 0}, ErrVersion, 0},
		{"length over max", encode(t, ok, func(b []byte) { be.PutUint16(b[offLength:], MaxPayload+1) }, false), ErrTooLong, 0},
		{"length over max in a prefix", []byte{0x56, 0x46, 1, 1, 1, 1, 0xFF, 0xFF}, ErrTooLong, 0},
		{"payload bit flip", encode(t, ok, func(b []byte) { b[HeaderLen] ^= 1 }, false), ErrCorrupt, len(good)},
		{"seq bit flip", encode(t, ok, func(b []byte) { b[offSeq+7] ^= 0x80 }, false), ErrCorrupt, len(good)},
		{"type bit flip", encode(t, ok, func(b []byte) { b[offType] ^= 0x40 }, false), ErrCorrupt, len(good)},
		{"trailer bit flip", encode(t, ok, func(b []byte) { b[len(b)-1] ^= 1 }, false), ErrCorrupt, len(good)},
		{"unknown type", encode(t, ok, func(b []byte) { b[offType] = 0x07 }, true), ErrType, len(good)},
		{"type zero", encode(t, ok, func(b []byte) { b[offType] = 0 }, true), ErrType, len(good)},
		{"priority 5", encode(t, ok, func(b []byte) { b[offPriority] = 5 }, true), ErrPriority, len(good)},
		{"undefined flag", encode(t, ok, func(b []byte) { b[offFlags] |= 0x04 }, true), ErrFlags, len(good)},
		{"resent without reliable", encode(t, ok, func(b []byte) { b[offFlags] = byte(Resent) }, true), ErrFlags, len(good)},
		{"flags on a control frame", encode(t, NewAck(1, t0), func(b []byte) { b[offFlags] = byte(Reliable) }, true), ErrFlags, Overhead},
		{"short hello", encode(t, Frame{Type: TypeECG, Payload: make([]byte, HelloLen-1)}, func(b []byte) { b[offType] = byte(TypeHello) }, true), ErrControl, Overhead + HelloLen - 1},
		{"hello with sequence 0", encode(t, NewHello(1, 1, t0), func(b []byte) { b[HeaderLen+7] = 0 }, true), ErrControl, Overhead + HelloLen},
		{"ack with payload", encode(t, Frame{Type: TypeECG, Payload: []byte{1}}, func(b []byte) { b[offType] = byte(TypeAck) }, true), ErrControl, Overhead + 1},
		{"resend request for 0", encode(t, NewResendRequest(1, t0), func(b []byte) { b[offSeq+7] = 0 }, true), ErrControl, Overhead},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, err := Decode(c.b); !errors.Is(err, c.want) {
				t.Errorf("Decode: %v, want %v", err, c.want)
			}
			_, n, err := Split(c.b)
			if c.want == ErrTrailing {
				if err != nil || n != c.n {
					t.Errorf("Split: n=%d err=%v, want the first frame (%d bytes)", n, err, c.n)
				}
				return
			}
			if !errors.Is(err, c.want) || n != c.n {
				t.Errorf("Split: n=%d err=%v, want n=%d %v", n, err, c.n, c.want)
			}
		})
	}
}

// Errors name what is wrong, and never echo the payload.
func TestErrorDetail(t *testing.T) {
	f := Frame{Type: TypeSpO2, Priority: High, Payload: []byte("SECRET-VITALS")}
	b := encode(t, f, func(b []byte) { b[offPriority] = 9 }, true)
	_, err := Decode(b)
	if err == nil || !strings.Contains(err.Error(), "9") || strings.Contains(err.Error(), "SECRET") {
		t.Fatalf("error %q should name priority 9 and not echo the payload", err)
	}
}

func TestAppendRefuses(t *testing.T) {
	cases := []struct {
		name string
		f    Frame
		want error
	}{
		{"payload too long", Frame{Type: TypeHistorySync, Priority: Background, Payload: make([]byte, MaxPayload+1)}, ErrTooLong},
		{"zero type", Frame{}, ErrType},
		{"unknown type", Frame{Type: 0x7F}, ErrType},
		{"unknown priority", Frame{Type: TypeECG, Priority: 5}, ErrPriority},
		{"undefined flag", Frame{Type: TypeECG, Flags: 0x80}, ErrFlags},
		{"resent best-effort", Frame{Type: TypeECG, Flags: Resent}, ErrFlags},
		{"reliable ack", Frame{Type: TypeAck, Flags: Reliable}, ErrFlags},
		{"hello without payload", Frame{Type: TypeHello}, ErrControl},
		{"hello from 0", NewHello(0, 1, t0), ErrControl},
		{"resend request with payload", Frame{Type: TypeResendRequest, Seq: 1, Payload: []byte{0}}, ErrControl},
		{"year 2300", Frame{Type: TypeECG, DeviceTime: time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC)}, ErrTimestamp},
		{"year 1600", Frame{Type: TypeECG, DeviceTime: time.Date(1600, 1, 1, 0, 0, 0, 0, time.UTC)}, ErrTimestamp},
	}
	for _, c := range cases {
		dst := []byte{1, 2}
		out, err := Append(dst, c.f)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: Append: %v, want %v", c.name, err, c.want)
		}
		if len(out) != 2 {
			t.Errorf("%s: Append grew dst on error", c.name)
		}
	}
}

// A stream reader splits back-to-back frames and reads more on
// ErrTruncated.
func TestSplitStream(t *testing.T) {
	var stream []byte
	for i := range 5 {
		stream, _ = Append(stream, Frame{Type: TypeECG, Priority: High, Flags: Reliable, Seq: uint64(i + 1), Payload: bytes.Repeat([]byte{byte(i)}, i*3)})
	}
	var seqs []uint64
	buf := []byte{}
	for i := 0; i < len(stream); i++ {
		buf = append(buf, stream[i]) // one byte at a time: the worst a socket can do
		for {
			f, n, err := Split(buf)
			if errors.Is(err, ErrTruncated) {
				break
			}
			if err != nil {
				t.Fatalf("Split: %v", err)
			}
			seqs = append(seqs, f.Seq)
			buf = buf[n:]
		}
	}
	if len(seqs) != 5 || seqs[4] != 5 || len(buf) != 0 {
		t.Fatalf("split %v with %d bytes left, want sequences 1..5 and nothing left", seqs, len(buf))
	}
}

func TestStrings(t *testing.T) {
	for _, ty := range Types() {
		if s := ty.String(); s == "" || strings.HasPrefix(s, "type(") {
			t.Errorf("type %#02x has no name", uint8(ty))
		}
	}
	if s := Type(0x42).String(); s != "type(0x42)" {
		t.Errorf("unknown type prints %q", s)
	}
	if s := Priority(7).String(); s != "priority(7)" {
		t.Errorf("unknown priority prints %q", s)
	}
	if s := (Reliable | Resent).String(); s != "reliable|resent" {
		t.Errorf("flags print %q", s)
	}
}

// Priorities are classify's, number for number and name for name, and
// each data type's default priority is what the classifier gives the same
// traffic over HTTP.
func TestPrioritiesMatchClassifier(t *testing.T) {
	for p := Critical; p <= Background; p++ {
		if cp := classify.Priority(p); cp.String() != p.String() || !cp.Valid() {
			t.Errorf("priority %d is %q here and %q in classify", p, p, cp)
		}
	}
	c := classify.New(nil)
	paths := map[Type]string{
		TypeCardiacArrest: "/vitals/alerts/cardiac_arrest_alert",
		TypeECG:           "/vitals/ecg_realtime",
		TypeSpO2:          "/vitals/spo2",
		TypeBloodPressure: "/vitals/bp",
		TypeDeviceStatus:  "/devices/d1/device_status",
	}
	for ty, path := range paths {
		got := c.Classify(classify.NewRequest("POST", path, nil))
		if Priority(got.Priority) != DefaultPriority(ty) {
			t.Errorf("%s: default %s, classifier gives %s (%s) for %s", ty, DefaultPriority(ty), got.Priority, got.Rule, path)
		}
	}
	// History sync has no classifier rule; it is background by design.
	if DefaultPriority(TypeHistorySync) != Background {
		t.Errorf("history sync defaults to %s", DefaultPriority(TypeHistorySync))
	}
	for _, ty := range Types() {
		want := ty == TypeCardiacArrest || ty == TypeECG || ty == TypeSpO2 || ty == TypeBloodPressure
		if !ty.Control() && DefaultPriority(ty).Reliable() != want {
			t.Errorf("%s: reliable by default = %v, want %v", ty, DefaultPriority(ty).Reliable(), want)
		}
	}
}

func TestHelloSeqs(t *testing.T) {
	r, b := NewHello(12, 34, t0).HelloSeqs()
	if r != 12 || b != 34 {
		t.Fatalf("HelloSeqs = %d, %d", r, b)
	}
	if r, b := NewAck(5, t0).HelloSeqs(); r != 0 || b != 0 {
		t.Fatal("HelloSeqs of an ack is not zero")
	}
}

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}
