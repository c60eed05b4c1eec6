package peer

import (
	"context"
	"errors"
	"maps"
	"time"

	"github.com/pion/webrtc/v4"
)

// vitalsLabel is the DataChannel the vitals frames travel on, beside the
// video of the same call and under the same DTLS session.
const vitalsLabel = "vitals"

// Vital is one vitals frame as this package uses it: its sequence
// number, when the device took it, and the opaque reading. The bytes on
// the channel are the vitals frame format (FrameCodec).
type Vital struct {
	Seq        uint64
	DeviceTime time.Time
	Payload    []byte
}

// FrameCodec turns Vitals into the vitals frame wire format and back;
// Decode must reject a damaged frame (its CRC). VitalsFrames is
// medmesh/examples/vitals/frame's.
type FrameCodec interface {
	Append(dst []byte, v Vital) ([]byte, error)
	Decode(b []byte) (Vital, error)
}

// VitalsSender is a patient monitor's feed: Count frames (0: until the
// call ends), one every Interval, each reading made by Reading.
type VitalsSender struct {
	Count    int
	Interval time.Duration
	// Reading returns the payload of frame seq. Payloads are never
	// logged.
	Reading func(seq uint64) []byte
}

// Stats is what a party saw of its call.
type Stats struct {
	// Setup is from the offer (made here, or received here) to the peer
	// connection being connected.
	Setup time.Duration
	// ICEServers is how many ICE server entries signalling handed out.
	ICEServers int
	// LocalCandidate and RemoteCandidate are the types of the selected
	// pair ("host", "relay", ...).
	LocalCandidate, RemoteCandidate string
	// VideoPayloadType and VideoMimeType are what was negotiated for the
	// received video; VideoPackets counts its RTP packets, and
	// RTPPayloadTypes every received RTP packet by payload type.
	VideoPayloadType uint8
	VideoMimeType    string
	VideoPackets     int
	RTPPayloadTypes  map[uint8]int
	// Messages counts what arrived on the vitals channel.
	Messages int
	// FramesSent, FramesReceived count vitals frames; BadFrames those
	// that did not decode; OutOfOrder those whose sequence number was
	// not the previous one plus one.
	FramesSent, FramesReceived, BadFrames, OutOfOrder int
	// FrameLatencies are receive time minus device time, in order of
	// arrival (meaningful when both parties share a clock, as on
	// loopback), since the call began or the last TakeFrameLatencies.
	FrameLatencies  []time.Duration
	DataChannelOpen bool
}

// Stats returns a copy of the call's statistics so far.
func (c *Call) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.stats
	s.RTPPayloadTypes = maps.Clone(c.stats.RTPPayloadTypes)
	s.FrameLatencies = append([]time.Duration(nil), c.stats.FrameLatencies...)
	return s
}

// TakeFrameLatencies returns the frame latencies recorded since the call
// began or the previous TakeFrameLatencies, and forgets them: a party
// that reports every period takes them, and a long call's memory stays
// bounded (Stats keeps every latency otherwise).
func (c *Call) TakeFrameLatencies() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	l := c.stats.FrameLatencies
	c.stats.FrameLatencies = nil
	return l
}

// vitalsChannel wires the vitals DataChannel, whichever side opened it.
func (c *Call) vitalsChannel(dc *webrtc.DataChannel) {
	if dc.Label() != vitalsLabel {
		return
	}
	var last uint64
	var seen bool
	dc.OnMessage(func(msg webrtc.DataChannelMessage) {
		now := time.Now()
		c.mu.Lock()
		defer c.mu.Unlock()
		c.stats.Messages++
		v, err := c.o.Codec.Decode(msg.Data)
		if err != nil || msg.IsString {
			c.stats.BadFrames++
			return
		}
		if seen && v.Seq != last+1 {
			c.stats.OutOfOrder++
		}
		last, seen = v.Seq, true
		c.stats.FramesReceived++
		c.stats.FrameLatencies = append(c.stats.FrameLatencies, now.Sub(v.DeviceTime))
	})
	dc.OnOpen(func() {
		c.mu.Lock()
		c.stats.DataChannelOpen = true
		c.mu.Unlock()
		if c.o.Vitals != nil {
			go c.sendVitals(context.Background(), dc)
		}
	})
}

func (c *Call) sendVitals(ctx context.Context, dc *webrtc.DataChannel) {
	vs := c.o.Vitals
	interval := vs.Interval
	if interval <= 0 {
		interval = 20 * time.Millisecond
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	var buf []byte
	for seq := uint64(1); vs.Count == 0 || seq <= uint64(vs.Count); seq++ {
		select {
		case <-c.ended:
			return
		case <-ctx.Done():
			return
		case <-t.C:
		}
		var payload []byte
		if vs.Reading != nil {
			payload = vs.Reading(seq)
		}
		var err error
		buf, err = c.o.Codec.Append(buf[:0], Vital{Seq: seq, DeviceTime: time.Now(), Payload: payload})
		if err == nil {
			err = dc.Send(buf)
		}
		if err != nil {
			if !errors.Is(err, context.Canceled) {
				c.log.Warn("vitals frame not sent", "seq", seq, "err", err)
			}
			return
		}
		c.mu.Lock()
		c.stats.FramesSent++
		c.mu.Unlock()
	}
}
