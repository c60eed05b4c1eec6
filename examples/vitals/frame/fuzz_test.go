package frame

import (
	"bytes"
	"errors"
	"testing"
)

var allErrors = []error{ErrTruncated, ErrTrailing, ErrCorrupt, ErrMagic, ErrVersion, ErrTooLong,
	ErrFlags, ErrType, ErrPriority, ErrControl, ErrTimestamp}

// FuzzDecode: Decode never panics, every error is one of the package's,
// anything it accepts re-encodes to the same bytes, and Split agrees with
// Decode.
func FuzzDecode(f *testing.F) {
	for _, fr := range []Frame{
		{Type: TypeECG, Priority: High, Flags: Reliable, Seq: 1, DeviceTime: t0, Payload: []byte{1, 2, 3, 4}},
		{Type: TypeCardiacArrest, Priority: Critical, Flags: Reliable | Resent, Seq: 9},
		{Type: TypeDeviceStatus, Priority: Background, Seq: 3, Payload: []byte{0}},
		NewHello(1, 1, t0),
		NewAck(7, t0),
		NewResendRequest(8, t0),
	} {
		b, err := Append(nil, fr)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		f.Add(b[:len(b)-1])
		f.Add(append(b, b...))
	}
	f.Add([]byte{})
	f.Add([]byte("VF"))
	f.Add([]byte{0x56, 0x46, 1, 1, 1, 1, 0xFF, 0xFF})
	f.Fuzz(func(t *testing.T, b []byte) {
		in := bytes.Clone(b)
		fr, err := Decode(b)
		if !bytes.Equal(in, b) {
			t.Fatal("Decode modified its input")
		}
		sf, n, serr := Split(b)
		if n < 0 || n > len(b) {
			t.Fatalf("Split returned n=%d for %d bytes", n, len(b))
		}
		if err != nil {
			if !known(err) {
				t.Fatalf("Decode error %v matches none of the package's errors", err)
			}
			if serr == nil && n == len(b) {
				t.Fatalf("Split accepted what Decode refused (%v)", err)
			}
			if serr != nil && !known(serr) {
				t.Fatalf("Split error %v matches none of the package's errors", serr)
			}
			if serr == nil && !errors.Is(err, ErrTrailing) {
				t.Fatalf("Split accepted a frame, Decode says %v", err)
			}
			return
		}
		if serr != nil || n != len(b) || sf.Seq != fr.Seq {
			t.Fatalf("Split disagrees with Decode: n=%d err=%v", n, serr)
		}
		out, err := Append(nil, fr)
		if err != nil {
			t.Fatalf("Append refused a decoded frame: %v", err)
		}
		if !bytes.Equal(out, b) {
			t.Fatalf("re-encoding changed the bytes:\n in % x\nout % x", b, out)
		}
	})
}

func known(err error) bool {
	for _, e := range allErrors {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
