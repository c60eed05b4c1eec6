package frame

import (
	"encoding/binary"
	"fmt"
	"time"
)

var be = binary.BigEndian

// Header field offsets (docs/vitals-frames.md).
const (
	offVersion  = 2
	offType     = 3
	offPriority = 4
	offFlags    = 5
	offLength   = 6
	offSeq      = 8
	offTime     = 16
)

// Append appends f's encoding to dst. It refuses (and returns dst
// unchanged) any frame Decode would refuse, so what one end writes the
// other can read.
func Append(dst []byte, f Frame) ([]byte, error) {
	if err := f.Validate(); err != nil {
		return dst, err
	}
	start := len(dst)
	var h [HeaderLen]byte
	h[0], h[1] = magic0, magic1
	h[offVersion] = Version
	h[offType] = byte(f.Type)
	h[offPriority] = byte(f.Priority)
	h[offFlags] = byte(f.Flags)
	be.PutUint16(h[offLength:], uint16(len(f.Payload)))
	be.PutUint64(h[offSeq:], f.Seq)
	var nanos int64
	if !f.DeviceTime.IsZero() {
		nanos = f.DeviceTime.UnixNano()
	}
	be.PutUint64(h[offTime:], uint64(nanos))
	dst = append(dst, h[:]...)
	dst = append(dst, f.Payload...)
	return be.AppendUint16(dst, crc16(dst[start:])), nil
}

// Decode decodes b, which must hold exactly one frame. The returned
// Payload aliases b (no copy; its capacity ends at the payload, so
// appending to it cannot overwrite b's CRC): copy it before reusing b.
// An empty payload is nil. DeviceTime is in UTC.
//
// Decode never panics; every error matches one of the Err variables.
func Decode(b []byte) (Frame, error) {
	f, n, err := Split(b)
	if err != nil {
		return Frame{}, err
	}
	if n != len(b) {
		return Frame{}, fmt.Errorf("%w: %d bytes after a %d-byte frame", ErrTrailing, len(b)-n, n)
	}
	return f, nil
}

// Split decodes the first frame of a byte stream and returns it with its
// length; the Payload aliases b as in Decode.
//
// ErrTruncated means b is a valid prefix of a frame (magic, version and
// length checked as far as b goes): read more and call again. For
// ErrCorrupt and for a frame whose header fields or control payload are
// invalid, n is the frame's length as its header declares, so a stream
// reader may skip it; the magic, version and length were sound, so the
// boundary is likely right. ErrMagic, ErrVersion and ErrTooLong return
// n == 0: nothing says where the next frame starts, and the stream should
// be abandoned.
//
// The CRC is checked before the type, priority and flags, so a bit flipped
// anywhere in the header or payload reports ErrCorrupt.
func Split(b []byte) (Frame, int, error) {
	if err := checkPrefix(b); err != nil {
		return Frame{}, 0, err
	}
	if len(b) < HeaderLen {
		return Frame{}, 0, fmt.Errorf("%w: %d bytes, the header alone is %d", ErrTruncated, len(b), HeaderLen)
	}
	plen := int(be.Uint16(b[offLength:]))
	n := HeaderLen + plen + TrailerLen
	if len(b) < n {
		return Frame{}, 0, fmt.Errorf("%w: %d bytes, the frame is %d", ErrTruncated, len(b), n)
	}
	if got, want := crc16(b[:n-TrailerLen]), be.Uint16(b[n-TrailerLen:]); got != want {
		return Frame{}, n, fmt.Errorf("%w: CRC %#04x, trailer says %#04x", ErrCorrupt, got, want)
	}
	f := Frame{
		Type:     Type(b[offType]),
		Priority: Priority(b[offPriority]),
		Flags:    Flags(b[offFlags]),
		Seq:      be.Uint64(b[offSeq:]),
	}
	if nanos := int64(be.Uint64(b[offTime:])); nanos != 0 {
		f.DeviceTime = time.Unix(0, nanos).UTC()
	}
	if plen > 0 {
		f.Payload = b[HeaderLen : HeaderLen+plen : HeaderLen+plen]
	}
	if err := f.Validate(); err != nil {
		return Frame{}, n, err
	}
	return f, n, nil
}

// checkPrefix checks the structural fields that b already holds: the
// ones that tell where a frame ends.
func checkPrefix(b []byte) error {
	if (len(b) > 0 && b[0] != magic0) || (len(b) > 1 && b[1] != magic1) {
		return fmt.Errorf("%w: starts % x, want 56 46 (\"VF\")", ErrMagic, b[:min(len(b), 2)])
	}
	if len(b) > offVersion && b[offVersion] != Version {
		return fmt.Errorf("%w: %d, this reader knows %d", ErrVersion, b[offVersion], Version)
	}
	if len(b) >= offLength+2 {
		if plen := be.Uint16(b[offLength:]); plen > MaxPayload {
			return fmt.Errorf("%w: header declares %d bytes, at most %d", ErrTooLong, plen, MaxPayload)
		}
	}
	return nil
}
