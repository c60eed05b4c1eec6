package integration

import (
	"testing"

	"medmesh/examples/telehealth/peer"
	"medmesh/examples/vitals/frame"
)

// vitalsCodec decodes the vitals frames on the DataChannel with
// medmesh/examples/vitals/frame (CRC checked), whoever encoded them: the
// pion patient, or the page's JavaScript.
var vitalsCodec peer.FrameCodec = peer.VitalsFrames{Type: frame.TypeSpO2}

// checkFrames checks what the clinician received of n frames sent: all
// of them, decoded with a valid CRC, in sequence.
func checkFrames(t *testing.T, s peer.Stats, n int) {
	t.Helper()
	if s.Messages != n || s.FramesReceived != n || s.BadFrames != 0 || s.OutOfOrder != 0 {
		t.Errorf("vitals: %d messages, %d frames decoded, %d bad, %d out of sequence; want %d frames, none bad or out of sequence",
			s.Messages, s.FramesReceived, s.BadFrames, s.OutOfOrder, n)
	}
}
