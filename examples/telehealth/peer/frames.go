package peer

import (
	"fmt"

	"medmesh/examples/vitals/frame"
)

// VitalsFrames is the FrameCodec of medmesh/examples/vitals/frame for one
// data type (a patient's pulse oximeter at home sends frame.TypeSpO2).
// Frames go in the best-effort lane (no Reliable flag): the DataChannel
// is itself ordered and reliable, so the vitals reliability layer's acks
// and resends would only duplicate SCTP's.
type VitalsFrames struct{ Type frame.Type }

// Append encodes v as a frame of the codec's type, at the type's
// default priority.
func (c VitalsFrames) Append(dst []byte, v Vital) ([]byte, error) {
	return frame.Append(dst, frame.Frame{Type: c.Type, Priority: frame.DefaultPriority(c.Type), Seq: v.Seq, DeviceTime: v.DeviceTime, Payload: v.Payload})
}

// Decode decodes one frame (checking its CRC) and refuses control
// frames and frames of another type.
func (c VitalsFrames) Decode(b []byte) (Vital, error) {
	f, err := frame.Decode(b)
	if err != nil {
		return Vital{}, err
	}
	if f.Type != c.Type {
		return Vital{}, fmt.Errorf("vitals frame: type %s, want %s", f.Type, c.Type)
	}
	return Vital{Seq: f.Seq, DeviceTime: f.DeviceTime, Payload: f.Payload}, nil
}

// DefaultCodec is what a party uses without Options.Codec: SpO2 frames.
var DefaultCodec FrameCodec = VitalsFrames{Type: frame.TypeSpO2}
