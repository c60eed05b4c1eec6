package peer

import (
	"time"

	"medmesh/examples/telehealth/signal"
)

// ReportMessage is the message of a party's periodic log line (the
// command telehealth-peer logs one every --report).
const ReportMessage = "call"

// States of a party in a Report.
const (
	// StateConnecting: joining, waiting for the other party, or setting
	// up the peer connection (ICE, DTLS).
	StateConnecting = "connecting"
	// StateConnected: the peer connection is up.
	StateConnected = "connected"
	// StateFailed: the last join was refused or the last call failed
	// (ICE, DTLS, signalling); the party tries again.
	StateFailed = "failed"
	// StateStopped: the party left its call to stop (its last line).
	StateStopped = "stopped"
)

// Report is one periodic log line of a party (message ReportMessage),
// the figures a demo or a bench reads back: decode the JSON line into it
// (the JSON names are the line's keys). Counts are since the party
// started, over every call it joined; the frame latencies are of the
// frames received since the previous line. Nothing in it identifies the
// call or carries a reading.
type Report struct {
	Role  string `json:"role"`
	State string `json:"state"`
	// SetupMS is the current call's setup, from the offer to the peer
	// connection being connected; absent until it is.
	SetupMS float64 `json:"setup_ms,omitempty"`
	// RTPPackets are the RTP packets received (a clinician).
	RTPPackets int `json:"rtp_packets,omitempty"`
	// FramesSent are the vitals frames sent (a patient).
	FramesSent int `json:"frames_sent,omitempty"`
	// Frames are the vitals frames received and decoded; FramesBadCRC
	// those that did not decode (a damaged frame fails its CRC).
	Frames       int `json:"frames"`
	FramesBadCRC int `json:"frames_bad_crc"`
	// FrameP50MS and FrameP99MS are the latency, device time to arrival,
	// of the frames received since the previous line; absent when none
	// arrived (and at a patient, who receives none).
	FrameP50MS float64 `json:"frame_p50_ms,omitempty"`
	FrameP99MS float64 `json:"frame_p99_ms,omitempty"`
	// Reconnects are the calls that ended (the other party left or
	// restarted, the connection failed) and that the party joined again.
	Reconnects int `json:"reconnects,omitempty"`
}

// LogAttrs are the report's key-value pairs for slog, the keys being
// the JSON names: a clinician's RTP packets and frame latencies, a
// patient's frames sent, either's received frames; setup, latencies and
// reconnects only when there are any.
func (r Report) LogAttrs() []any {
	a := []any{"role", r.Role, "state", r.State}
	if r.SetupMS > 0 {
		a = append(a, "setup_ms", r.SetupMS)
	}
	if r.Role == signal.RoleClinician {
		a = append(a, "rtp_packets", r.RTPPackets)
	} else {
		a = append(a, "frames_sent", r.FramesSent)
	}
	a = append(a, "frames", r.Frames, "frames_bad_crc", r.FramesBadCRC)
	if r.FrameP50MS > 0 || r.FrameP99MS > 0 {
		a = append(a, "frame_p50_ms", r.FrameP50MS, "frame_p99_ms", r.FrameP99MS)
	}
	if r.Reconnects > 0 {
		a = append(a, "reconnects", r.Reconnects)
	}
	return a
}

// Millis is d in milliseconds, to the microsecond, as a Report has it.
func Millis(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
