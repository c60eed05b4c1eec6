package peer

import (
	"context"
	"fmt"
	"slices"
	"time"

	"medmesh/examples/telehealth/signal"
)

// Dialer opens a signalling stream (signal.Dial on a mesh connection).
type Dialer func(ctx context.Context) (signal.ClientConn, error)

// MeasureOptions describe the call MeasureCall makes.
type MeasureOptions struct {
	Call, Kind string
	// Frames vitals frames are sent, one every Interval (default 20 ms,
	// a 50 Hz monitor).
	Frames   int
	Interval time.Duration
	// Codec encodes and decodes the frames (default DefaultCodec).
	Codec FrameCodec
	// Base is copied into both parties' options (ports, relay-only,
	// loopback); its role, call and media fields are set here.
	Base Options
}

// Measurement is what one measured call gave.
type Measurement struct {
	// Setup is from the clinician's offer to its peer connection being
	// connected, signalling through whatever the dialers reach.
	Setup time.Duration
	// Frames were received of those sent; OutOfOrder and Bad count the
	// ones out of sequence or failing to decode.
	Frames, OutOfOrder, Bad int
	// FrameP50 and FrameP99 are the vitals frames' latency, device time
	// to arrival at the clinician (same clock: loopback).
	FrameP50, FrameP99 time.Duration
	// Candidates is the selected pair, local/remote at the clinician.
	Candidates string
	// Latencies are every frame's, in order of arrival.
	Latencies []time.Duration
}

func (m Measurement) String() string {
	return fmt.Sprintf("setup=%s frames=%d out_of_order=%d bad=%d frame_p50=%s frame_p99=%s pair=%s",
		m.Setup.Round(time.Microsecond), m.Frames, m.OutOfOrder, m.Bad,
		m.FrameP50.Round(time.Microsecond), m.FrameP99.Round(time.Microsecond), m.Candidates)
}

// MeasureCall makes one call, a clinician (who opens it and offers) and a
// patient (video and vitals frames), through the two dialers, and
// measures its setup and, with a codec, its vitals frame latency. It
// returns once every frame has arrived or ctx ends.
func MeasureCall(ctx context.Context, clinician, patient Dialer, o MeasureOptions) (Measurement, error) {
	var m Measurement
	if o.Interval <= 0 {
		o.Interval = 20 * time.Millisecond
	}
	co := o.Base
	co.Role, co.Call, co.Kind, co.Codec, co.SendVideo, co.Vitals = signal.RoleClinician, o.Call, o.Kind, o.Codec, false, nil
	clin, err := joinVia(ctx, clinician, co)
	if err != nil {
		return m, fmt.Errorf("clinician: %w", err)
	}
	defer clin.Close()
	po := o.Base
	po.Role, po.Call, po.Kind, po.Codec, po.SendVideo = signal.RolePatient, o.Call, o.Kind, o.Codec, true
	po.Vitals = nil
	if o.Frames > 0 {
		po.Vitals = &VitalsSender{Count: o.Frames, Interval: o.Interval, Reading: SyntheticReading}
	}
	pat, err := joinVia(ctx, patient, po)
	if err != nil {
		return m, fmt.Errorf("patient: %w", err)
	}
	defer pat.Close()
	select {
	case <-clin.Connected():
	case <-clin.Ended():
		return m, fmt.Errorf("call ended before connecting: %w", clin.Err())
	case <-ctx.Done():
		return m, fmt.Errorf("call not connected: %w", ctx.Err())
	}
	want := o.Frames
	if po.Vitals == nil {
		want = 0
	}
	// Frames arrive on pion's goroutines; look at the count between them.
	t := time.NewTicker(o.Interval)
	defer t.Stop()
	for {
		s := clin.Stats()
		if s.FramesReceived+s.BadFrames >= want {
			m.Setup, m.Frames, m.OutOfOrder, m.Bad = s.Setup, s.FramesReceived, s.OutOfOrder, s.BadFrames
			m.FrameP50, m.FrameP99 = Percentile(s.FrameLatencies, 50), Percentile(s.FrameLatencies, 99)
			m.Candidates = s.LocalCandidate + "/" + s.RemoteCandidate
			m.Latencies = s.FrameLatencies
			return m, nil
		}
		select {
		case <-clin.Ended():
			return m, fmt.Errorf("call ended after %d of %d frames: %w", s.FramesReceived, want, clin.Err())
		case <-ctx.Done():
			return m, fmt.Errorf("%d of %d frames arrived: %w", s.FramesReceived, want, ctx.Err())
		case <-t.C:
		}
	}
}

func joinVia(ctx context.Context, dial Dialer, o Options) (*Call, error) {
	conn, err := dial(ctx)
	if err != nil {
		return nil, err
	}
	return Join(ctx, conn, o)
}

// SyntheticReading is a made-up SpO2 and pulse for frame seq (a
// VitalsSender's Reading): never a patient's.
func SyntheticReading(seq uint64) []byte { return []byte{byte(95 + seq%4), byte(60 + seq%20)} }

// Percentile is the p-th percentile (nearest rank) of ds; 0 when empty.
func Percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := int(float64(len(s))*p/100+0.999999) - 1
	return s[max(0, min(rank, len(s)-1))]
}
