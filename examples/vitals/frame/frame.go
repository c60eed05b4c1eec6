// Package frame is the binary frame format of the realtime vitals
// stream: bedside devices send frames to a vitals service, which forwards
// them to nurse stations. A frame is a 24-byte header, a payload of at
// most MaxPayload bytes and a CRC-16 trailer; docs/vitals-frames.md has
// the layout byte by byte.
//
// The payload is opaque here: this package never interprets, logs or
// prints it, because it carries vitals values (PHI). Error messages name
// header fields and lengths only.
//
// Types carry a default priority that matches medmesh's classifier for
// the same kind of vitals traffic (sidecar/classify), and the priority
// decides the lane: CRITICAL and HIGH frames travel in the reliable lane
// (acknowledged, resent, delivered in order; package reliable), lower
// priorities in the best-effort lane.
package frame

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// Sizes and limits of the format.
const (
	// HeaderLen is the fixed header's length.
	HeaderLen = 24
	// TrailerLen is the CRC's length.
	TrailerLen = 2
	// Overhead is what a frame adds to its payload.
	Overhead = HeaderLen + TrailerLen
	// MaxPayload is the longest payload. A waveform chunk is a few hundred
	// bytes; the bound keeps one frame from holding a link (and a
	// receiver's buffer) for long, so bulk history is sent in many frames.
	MaxPayload = 16 << 10
	// Version is the only version this package reads and writes.
	Version = 1
)

// magic opens every frame: "VF".
const (
	magic0 = 0x56
	magic1 = 0x46
)

// Type says what a frame carries.
type Type uint8

// Data types. Values below 0x80 are data, 0x80 and above control.
const (
	TypeECG           Type = 0x01 // a chunk of ECG waveform samples
	TypeSpO2          Type = 0x02 // oxygen saturation (and pulse) reading
	TypeBloodPressure Type = 0x03 // blood pressure reading
	TypeCardiacArrest Type = 0x04 // cardiac-arrest alarm
	TypeDeviceStatus  Type = 0x05 // battery, leads off, signal quality
	TypeHistorySync   Type = 0x06 // bulk history the device stored while offline
)

// Control types, used by the reliability layer (package reliable).
const (
	// TypeHello starts or resumes a stream. Its payload is two uint64s:
	// the next sequence the sender will send in the reliable lane (the
	// oldest unacknowledged one on a resume) and in the best-effort lane.
	TypeHello Type = 0x80
	// TypeAck acknowledges, cumulatively, every reliable frame up to and
	// including Seq. Empty payload.
	TypeAck Type = 0x81
	// TypeResendRequest asks for the reliable frame Seq, the first one
	// the receiver is missing; it also acknowledges everything below Seq.
	// Empty payload.
	TypeResendRequest Type = 0x82
)

// HelloLen is a Hello's payload length.
const HelloLen = 16

var typeNames = map[Type]string{
	TypeECG:           "ecg",
	TypeSpO2:          "spo2",
	TypeBloodPressure: "blood-pressure",
	TypeCardiacArrest: "cardiac-arrest",
	TypeDeviceStatus:  "device-status",
	TypeHistorySync:   "history-sync",
	TypeHello:         "hello",
	TypeAck:           "ack",
	TypeResendRequest: "resend-request",
}

func (t Type) String() string {
	if n, ok := typeNames[t]; ok {
		return n
	}
	return fmt.Sprintf("type(%#02x)", uint8(t))
}

// Known reports whether t is a type this version defines.
func (t Type) Known() bool { _, ok := typeNames[t]; return ok }

// Control reports whether t is a control type (Hello, Ack,
// ResendRequest), which the reliability layer consumes and never
// delivers.
func (t Type) Control() bool { return t >= 0x80 }

// Types returns every known type, data types first.
func Types() []Type {
	return []Type{TypeECG, TypeSpO2, TypeBloodPressure, TypeCardiacArrest, TypeDeviceStatus, TypeHistorySync,
		TypeHello, TypeAck, TypeResendRequest}
}

// Priority is a clinical priority, numbered as sidecar/classify numbers
// them: lower is more urgent.
type Priority uint8

// Priorities, most urgent first.
const (
	Critical Priority = iota
	High
	Medium
	Low
	Background
)

var priorityNames = [...]string{"critical", "high", "medium", "low", "background"}

func (p Priority) String() string {
	if !p.Valid() {
		return fmt.Sprintf("priority(%d)", uint8(p))
	}
	return priorityNames[p]
}

// Valid reports whether p is one of the five levels.
func (p Priority) Valid() bool { return int(p) < len(priorityNames) }

// Reliable reports whether frames of priority p go in the reliable lane:
// CRITICAL and HIGH are clinical data a nurse must not miss (an alarm, the
// waveform around it), so they are acknowledged and resent; anything less
// urgent is superseded by the next sample and is not worth a resend.
func (p Priority) Reliable() bool { return p <= High }

// DefaultPriority returns t's priority as medmesh's classifier rates the
// same traffic: the cardiac-arrest alarm is vitals.alert (critical); ECG
// and SpO2 are vitals.ecg and vitals.spo2 (high); blood pressure falls
// under vitals.stream (high); device status is device.status
// (background). History sync has no classifier rule of its own (a
// /vitals/... path would be vitals.stream); it is background like the
// classifier's other bulk transfers (FHIR $export), because it is old data
// in bulk and must never hold up a live alarm. Control frames are critical:
// the reliable lane, alarms included, waits on them.
func DefaultPriority(t Type) Priority {
	switch t {
	case TypeCardiacArrest, TypeHello, TypeAck, TypeResendRequest:
		return Critical
	case TypeECG, TypeSpO2, TypeBloodPressure:
		return High
	case TypeDeviceStatus, TypeHistorySync:
		return Background
	}
	return Background
}

// Flags are per-frame bits.
type Flags uint8

const (
	// Reliable: the frame is in the reliable lane, so it is acknowledged,
	// resent and delivered in sequence order; Seq counts that lane.
	Reliable Flags = 1 << 0
	// Resent: the frame is a retransmission (only reliable frames are
	// resent). Receivers treat it like the original; it is for counting.
	Resent Flags = 1 << 1

	knownFlags = Reliable | Resent
)

func (f Flags) String() string {
	switch f {
	case 0:
		return "none"
	case Reliable:
		return "reliable"
	case Resent:
		return "resent"
	case Reliable | Resent:
		return "reliable|resent"
	}
	return fmt.Sprintf("flags(%#02x)", uint8(f))
}

// Frame is one decoded frame.
type Frame struct {
	Type     Type
	Priority Priority
	Flags    Flags
	// Seq is the frame's sequence number in its lane (Flags&Reliable
	// says which). Senders start each lane at 1. In an Ack or a
	// ResendRequest it is the acknowledged or requested sequence.
	Seq uint64
	// DeviceTime is the sender's clock when the sample was taken. It is
	// sent as Unix nanoseconds; 0 stands for the zero Time (unknown), so
	// the Unix epoch itself cannot be sent.
	DeviceTime time.Time
	// Payload is opaque to this package. Never log it: it holds vitals.
	Payload []byte
}

// New returns a data frame of type t with t's default priority. The
// reliability layer fills in Flags and Seq.
func New(t Type, deviceTime time.Time, payload []byte) Frame {
	return Frame{Type: t, Priority: DefaultPriority(t), DeviceTime: deviceTime, Payload: payload}
}

// NewHello returns a Hello: the next reliable and best-effort sequences
// the sender will send.
func NewHello(reliable, bestEffort uint64, now time.Time) Frame {
	p := make([]byte, HelloLen)
	be.PutUint64(p[0:8], reliable)
	be.PutUint64(p[8:16], bestEffort)
	return Frame{Type: TypeHello, Priority: DefaultPriority(TypeHello), DeviceTime: now, Payload: p}
}

// NewAck returns a cumulative acknowledgement of every reliable frame up
// to and including seq (0: none yet).
func NewAck(seq uint64, now time.Time) Frame {
	return Frame{Type: TypeAck, Priority: DefaultPriority(TypeAck), Seq: seq, DeviceTime: now}
}

// NewResendRequest asks for reliable frame seq, the first one missing.
func NewResendRequest(seq uint64, now time.Time) Frame {
	return Frame{Type: TypeResendRequest, Priority: DefaultPriority(TypeResendRequest), Seq: seq, DeviceTime: now}
}

// HelloSeqs returns a Hello's next reliable and best-effort sequences;
// zeros if f is not a well-formed Hello (Decode accepts only well-formed
// ones).
func (f Frame) HelloSeqs() (reliable, bestEffort uint64) {
	if f.Type != TypeHello || len(f.Payload) != HelloLen {
		return 0, 0
	}
	return be.Uint64(f.Payload[0:8]), be.Uint64(f.Payload[8:16])
}

// Errors. Every error this package returns matches one of them with
// errors.Is and adds what was wrong.
var (
	// ErrTruncated: the bytes end before the frame does. From Split this
	// means "read more"; the bytes so far are a valid prefix.
	ErrTruncated = errors.New("frame truncated")
	// ErrTrailing: Decode was given bytes after the frame.
	ErrTrailing = errors.New("bytes after frame")
	// ErrCorrupt: the CRC does not match the header and payload.
	ErrCorrupt = errors.New("frame corrupt")
	ErrMagic   = errors.New("not a vitals frame")
	ErrVersion = errors.New("unsupported frame version")
	// ErrTooLong: the payload exceeds MaxPayload.
	ErrTooLong   = errors.New("frame payload too long")
	ErrFlags     = errors.New("invalid frame flags")
	ErrType      = errors.New("unknown frame type")
	ErrPriority  = errors.New("invalid frame priority")
	ErrControl   = errors.New("malformed control frame")
	ErrTimestamp = errors.New("device time not representable")
)

// The range of instants int64 Unix nanoseconds can express.
var (
	minTime = time.Unix(0, math.MinInt64)
	maxTime = time.Unix(0, math.MaxInt64)
)

// Validate reports whether f can be encoded: a known type, a valid
// priority, only defined flags (Resent only with Reliable, none on control
// frames), a payload within MaxPayload, control payloads of the right
// shape, and a representable DeviceTime.
func (f Frame) Validate() error {
	if !f.Type.Known() {
		return fmt.Errorf("%w: %#02x", ErrType, uint8(f.Type))
	}
	if !f.Priority.Valid() {
		return fmt.Errorf("%w: %d (0 critical to 4 background)", ErrPriority, uint8(f.Priority))
	}
	switch {
	case f.Flags&^knownFlags != 0:
		return fmt.Errorf("%w: %#02x has undefined bits", ErrFlags, uint8(f.Flags))
	case f.Flags&Resent != 0 && f.Flags&Reliable == 0:
		return fmt.Errorf("%w: resent without reliable (only the reliable lane is resent)", ErrFlags)
	case f.Type.Control() && f.Flags != 0:
		return fmt.Errorf("%w: %s frame with flags %s (control frames carry none)", ErrFlags, f.Type, f.Flags)
	}
	if len(f.Payload) > MaxPayload {
		return fmt.Errorf("%w: %d bytes, at most %d", ErrTooLong, len(f.Payload), MaxPayload)
	}
	if err := f.validateControl(); err != nil {
		return err
	}
	if !f.DeviceTime.IsZero() && (f.DeviceTime.Before(minTime) || f.DeviceTime.After(maxTime)) {
		return fmt.Errorf("%w: outside int64 Unix nanoseconds (years 1678 to 2262)", ErrTimestamp)
	}
	return nil
}

func (f Frame) validateControl() error {
	switch f.Type {
	case TypeHello:
		if len(f.Payload) != HelloLen {
			return fmt.Errorf("%w: hello payload is %d bytes, want %d", ErrControl, len(f.Payload), HelloLen)
		}
		if r, b := f.HelloSeqs(); r == 0 || b == 0 {
			return fmt.Errorf("%w: hello with sequence 0 (lanes start at 1)", ErrControl)
		}
	case TypeAck, TypeResendRequest:
		if len(f.Payload) != 0 {
			return fmt.Errorf("%w: %s with a %d-byte payload, want none", ErrControl, f.Type, len(f.Payload))
		}
		if f.Type == TypeResendRequest && f.Seq == 0 {
			return fmt.Errorf("%w: resend request for sequence 0 (lanes start at 1)", ErrControl)
		}
	}
	return nil
}
