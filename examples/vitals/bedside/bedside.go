// Package bedside simulates a bedside monitor of the vitals example: it
// streams synthetic ECG chunks, SpO2 and blood pressure readings, device
// status and, on demand, cardiac-arrest alarms to the vitals service at
// its site (vitalsrpc Stream) through the mesh. Reliable frames (alarms,
// ECG, SpO2, blood pressure) are kept until acknowledged and resent after
// a timeout (reliable.Sender); when the stream breaks (the vitals
// instance died, the mesh moved it), the device reconnects through the
// mesh, which picks another instance, and resumes from its last
// acknowledged frame.
//
// The samples are synthetic (a sine wave and constants); no example ever
// handles patient data. Logs carry counts and the device handle only.
package bedside

import (
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"math"
	"math/rand/v2"
	"sync"
	"time"

	"google.golang.org/grpc"

	"medmesh/examples/vitals/frame"
	"medmesh/examples/vitals/reliable"
	"medmesh/examples/vitals/vitalsrpc"
)

// Options configure a device. Zero intervals send nothing of that kind.
type Options struct {
	// Device is the pseudonymous handle ("bed-07"), never a serial.
	Device string
	// ECGEvery sends one waveform chunk of ECGSamples samples: 40 ms and
	// 10 samples is 250 Hz.
	ECGEvery   time.Duration
	ECGSamples int
	SpO2Every  time.Duration
	BPEvery    time.Duration
	// StatusEvery sends a device status frame (background).
	StatusEvery time.Duration
	// AlarmEvery raises a cardiac-arrest alarm periodically (0: only
	// through Alarm).
	AlarmEvery time.Duration
	// HistoryEvery sends one history-sync frame of HistoryBytes
	// (background bulk: the flood of the priority drills).
	HistoryEvery time.Duration
	HistoryBytes int
	// Sender configures the reliable lane (window, resend timeout).
	Sender reliable.SenderOptions
	// Reconnect is the pause before reconnecting after a broken stream.
	Reconnect time.Duration
	// Payload, when set, makes every frame's payload instead of the
	// synthetic samples (tests: a canary that must never reach a log).
	Payload func(frame.Type) []byte
	Log     *slog.Logger
}

// Typical is a bedside monitor at clinical rates: 250 Hz ECG in 40 ms
// chunks, SpO2 every second, blood pressure every 15 s, status every 5 s.
func Typical(device string) Options {
	return Options{Device: device, ECGEvery: 40 * time.Millisecond, ECGSamples: 10, SpO2Every: time.Second,
		BPEvery: 15 * time.Second, StatusEvery: 5 * time.Second, Reconnect: 50 * time.Millisecond}
}

// Opener opens a stream to the vitals service (vitalsrpc.OpenStream on a
// mesh connection).
type Opener func(ctx context.Context, device string) (grpc.BidiStreamingClient[vitalsrpc.Msg, vitalsrpc.Msg], error)

// OpenerFor opens streams on a gRPC connection (e.g. meshapp.Dial("vitals")).
func OpenerFor(cc grpc.ClientConnInterface) Opener {
	return func(ctx context.Context, device string) (grpc.BidiStreamingClient[vitalsrpc.Msg, vitalsrpc.Msg], error) {
		return vitalsrpc.OpenStream(ctx, cc, device)
	}
}

// Device is one simulated bedside monitor.
type Device struct {
	o     Options
	alarm chan struct{}
	quiet chan struct{} // closed by StopGenerating
	once  sync.Once

	mu     sync.Mutex // the Sender and the current stream
	sender *reliable.Sender
	stream grpc.BidiStreamingClient[vitalsrpc.Msg, vitalsrpc.Msg]
	// broke is when the current stream failed; zero while connected or
	// once the first Ack on a new stream has measured the gap. live: the
	// current stream has been answered.
	broke time.Time
	live  bool
	st    Stats
}

// Stats are a device's counters.
type Stats struct {
	reliable.SenderStats
	// Refused reliable frames found the window full (the link has been
	// down too long): the device raises its own alarm in real life.
	WindowFull int
	// BestEffortLost were generated while disconnected.
	BestEffortLost int
	Reconnects     int
	// Gaps are the failover gaps: from a broken stream to the first Ack
	// on the next one.
	Gaps []time.Duration
	// Alarms raised.
	Alarms int
}

// New returns a device.
func New(o Options) *Device {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.ECGSamples <= 0 {
		o.ECGSamples = 10
	}
	if o.HistoryBytes <= 0 {
		o.HistoryBytes = 512
	}
	return &Device{o: o, alarm: make(chan struct{}, 16), quiet: make(chan struct{}), sender: reliable.NewSender(o.Sender)}
}

// Name is the device's handle.
func (d *Device) Name() string { return d.o.Device }

// Alarm raises one cardiac-arrest alarm now.
func (d *Device) Alarm() { d.alarm <- struct{}{} }

// StopGenerating stops making new frames; the device keeps its stream
// and resends until everything it sent is acknowledged.
func (d *Device) StopGenerating() { d.once.Do(func() { close(d.quiet) }) }

// Stats returns the counters so far.
func (d *Device) Stats() Stats {
	d.mu.Lock()
	defer d.mu.Unlock()
	st := d.st
	st.SenderStats = d.sender.Stats()
	st.Gaps = append([]time.Duration(nil), d.st.Gaps...)
	return st
}

// Run streams until ctx ends, reconnecting whenever the stream breaks.
func (d *Device) Run(ctx context.Context, open Opener) error {
	go d.generate(ctx)
	resend := time.NewTicker(50 * time.Millisecond)
	defer resend.Stop()
	for ctx.Err() == nil {
		sctx, cancel := context.WithCancel(ctx)
		st, err := open(sctx, d.o.Device)
		if err == nil {
			err = d.serve(sctx, st, resend.C)
		}
		cancel()
		if ctx.Err() != nil {
			break
		}
		d.mu.Lock()
		// Only a stream the service had answered counts as broken: the
		// first attempts of a device switched on before any vitals
		// instance serves are not reconnects.
		if d.live {
			if d.broke.IsZero() {
				d.broke = time.Now()
			}
			d.st.Reconnects++
		}
		d.live = false
		d.stream = nil
		d.mu.Unlock()
		d.o.Log.Warn("vitals stream broken; reconnecting through the mesh", "device", d.o.Device, "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(d.o.Reconnect):
		}
	}
	return nil
}

// serve runs one stream: Resume, then resends and control frames until
// the stream breaks (new frames are written by generate).
func (d *Device) serve(ctx context.Context, st grpc.BidiStreamingClient[vitalsrpc.Msg, vitalsrpc.Msg], resend <-chan time.Time) error {
	d.mu.Lock()
	d.stream = st
	first := d.sender.Resume(time.Now())
	err := d.sendLocked(first...)
	d.mu.Unlock()
	if err != nil {
		return err
	}
	errc := make(chan error, 1)
	go func() { errc <- d.receive(st) }()
	for {
		select {
		case err := <-errc:
			return err
		case <-ctx.Done():
			return ctx.Err()
		case <-resend:
			d.mu.Lock()
			err := d.sendLocked(d.sender.Due(time.Now())...)
			d.mu.Unlock()
			if err != nil {
				return err
			}
		}
	}
}

// receive handles the service's control frames until the stream ends.
func (d *Device) receive(st grpc.BidiStreamingClient[vitalsrpc.Msg, vitalsrpc.Msg]) error {
	for {
		m, err := st.Recv()
		if err != nil {
			return err
		}
		f, err := frame.Decode(m.GetValue())
		if err != nil {
			continue // a corrupt control frame: the next Ack covers it
		}
		d.mu.Lock()
		again, _ := d.sender.OnControl(f, time.Now())
		d.live = true
		if f.Type == frame.TypeAck && !d.broke.IsZero() && f.Seq > 0 {
			d.st.Gaps = append(d.st.Gaps, time.Since(d.broke))
			d.broke = time.Time{}
		}
		err = d.sendLocked(again...)
		d.mu.Unlock()
		if err != nil {
			return err
		}
	}
}

// send numbers a new frame and writes it. A frame made while the
// stream is down is kept for the next Resume (reliable) or lost (best
// effort); a failed write leaves the stream to serve, which sees it end.
func (d *Device) send(f frame.Frame) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if f.Type == frame.TypeCardiacArrest {
		d.st.Alarms++
	}
	out, err := d.sender.Send(f, time.Now())
	if errors.Is(err, reliable.ErrWindowFull) {
		d.st.WindowFull++
		return nil
	}
	if err != nil {
		return err
	}
	if d.stream == nil {
		if out.Flags&frame.Reliable == 0 {
			d.st.BestEffortLost++
		}
		return nil // kept for Resume (reliable), or lost (best effort)
	}
	return d.sendLocked(out)
}

func (d *Device) sendLocked(fs ...frame.Frame) error {
	for _, f := range fs {
		if d.stream == nil {
			return nil
		}
		raw, err := frame.Append(nil, f)
		if err != nil {
			return err
		}
		if err := d.stream.Send(&vitalsrpc.Msg{Value: raw}); err != nil {
			d.stream = nil // broken: nothing more is written to it
			return err
		}
	}
	return nil
}

// generate makes frames at the configured rates until ctx ends.
func (d *Device) generate(ctx context.Context) {
	// Each kind starts at a random phase: devices switched on together
	// do not sample in lockstep, and an alarm is an event, not a tick of
	// the waveform clock.
	tick := func(every time.Duration) <-chan time.Time {
		if every <= 0 {
			return nil
		}
		c := make(chan time.Time, 1)
		go func() {
			select {
			case <-ctx.Done():
				return
			case <-time.After(rand.N(every)):
			}
			t := time.NewTicker(every)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case now := <-t.C:
					select {
					case c <- now:
					default: // the generator is behind: skip a tick, as time.Ticker does
					}
				}
			}
		}()
		return c
	}
	ecg, spo2, bp, status := tick(d.o.ECGEvery), tick(d.o.SpO2Every), tick(d.o.BPEvery), tick(d.o.StatusEvery)
	alarm, history := tick(d.o.AlarmEvery), tick(d.o.HistoryEvery)
	var phase float64
	emit := func(t frame.Type, payload []byte) {
		if d.o.Payload != nil {
			payload = d.o.Payload(t)
		}
		if err := d.send(frame.New(t, time.Now(), payload)); err != nil {
			d.o.Log.Debug("write failed; the stream is reconnecting", "device", d.o.Device, "err", err)
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.quiet:
			return
		case <-ecg:
			p := make([]byte, 2*d.o.ECGSamples)
			for i := range d.o.ECGSamples {
				binary.BigEndian.PutUint16(p[2*i:], uint16(int16(1000*math.Sin(phase))))
				phase += 2 * math.Pi / 250
			}
			emit(frame.TypeECG, p)
		case <-spo2:
			emit(frame.TypeSpO2, []byte{97, 72}) // saturation %, pulse: synthetic
		case <-bp:
			emit(frame.TypeBloodPressure, []byte{0, 120, 0, 80})
		case <-status:
			emit(frame.TypeDeviceStatus, []byte{100, 0, 0, 0})
		case <-history:
			emit(frame.TypeHistorySync, make([]byte, d.o.HistoryBytes))
		case <-alarm:
			emit(frame.TypeCardiacArrest, []byte{1})
		case <-d.alarm:
			emit(frame.TypeCardiacArrest, []byte{1})
		}
	}
}
