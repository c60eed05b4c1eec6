package integration

import (
	"testing"

	"medmesh/examples/telehealth/peer"
)

// vitalsCodec decodes the vitals frames on the DataChannel. Until
// medmesh/examples/vitals/frame lands, frames are counted, not decoded.
var vitalsCodec peer.FrameCodec

// checkFrames checks what the clinician received of n frames sent.
func checkFrames(t *testing.T, s peer.Stats, n int) {
	t.Helper()
	if s.Messages != n {
		t.Errorf("%d vitals messages received; want %d", s.Messages, n)
	}
}
