// Package nurse is the nurse station of the vitals example: the vitals
// service forwards each device's frames to it (vitalsrpc Deliver), it
// puts every device's frames back in order and drops the duplicates a
// device's failover produces (a reliable.Receiver without acks per
// device), measures each frame's age on arrival against the device's
// clock, and shows the frames to browsers over a WebSocket.
//
// It never logs a frame's payload (vital signs) or keeps more than the
// counters and latencies of what it delivered.
package nurse

import (
	"io"
	"log/slog"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"medmesh/examples/vitals/frame"
	"medmesh/examples/vitals/reliable"
	"medmesh/examples/vitals/vitalsrpc"
)

// Class is how the clinical latency budgets group frames.
type Class int

const (
	// Emergency: CRITICAL frames (the cardiac-arrest alarm); budget 20 ms.
	Emergency Class = iota
	// Critical: HIGH frames (ECG, SpO2, blood pressure); budget 50 ms.
	Critical
	// Routine: everything else (device status, history); budget 100 ms.
	Routine
	numClasses
)

var classNames = [...]string{"emergency", "critical", "routine"}

func (c Class) String() string { return classNames[c] }

// Budget is the end-to-end latency the clinical requirements allow.
func (c Class) Budget() time.Duration {
	return [...]time.Duration{20 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond}[c]
}

// ClassOf maps a frame priority to its class.
func ClassOf(p frame.Priority) Class {
	switch p {
	case frame.Critical:
		return Emergency
	case frame.High:
		return Critical
	}
	return Routine
}

// maxSamples bounds the latencies kept per class (about 10 MiB in all).
const maxSamples = 400_000

// Station receives forwarded frames. The zero value is not usable: call
// New.
type Station struct {
	log *slog.Logger
	now func() time.Time

	mu      sync.Mutex
	devices map[string]*device
	lat     [numClasses][]time.Duration
	subs    map[chan<- Delivered]struct{}
}

type device struct {
	recv *reliable.Receiver
	// reliable and bestEffort count delivered frames per lane; last is
	// the highest reliable sequence delivered.
	reliable, bestEffort int
	last                 uint64
	streams              int // forwarding streams seen (more than one: failover)
}

// Delivered is one frame as the station delivered it, for subscribers.
type Delivered struct {
	Device string
	Frame  frame.Frame
	Age    time.Duration
}

// New returns a station. now is the clock frames are aged with (nil:
// time.Now); devices must share it, as they do on one machine or with
// synchronised clocks.
func New(log *slog.Logger, now func() time.Time) *Station {
	if now == nil {
		now = time.Now
	}
	return &Station{log: log, now: now, devices: map[string]*device{}, subs: map[chan<- Delivered]struct{}{}}
}

// Deliver serves one forwarding stream (vitalsrpc.NurseServer).
func (s *Station) Deliver(st vitalsrpc.DeliverStream) error {
	dev := vitalsrpc.Device(st.Context())
	if dev == "" {
		return status.Errorf(codes.InvalidArgument, "no %s metadata: which device are these frames from?", vitalsrpc.DeviceHeader)
	}
	s.mu.Lock()
	d := s.device(dev)
	d.streams++
	s.mu.Unlock()
	var acked uint64
	for {
		m, err := st.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		last, err := s.accept(dev, m.GetValue())
		if err != nil {
			// Forwarded frames were checked by the vitals service; a bad
			// one here is a bug or a corrupting hop: say which, never what.
			s.log.Warn("dropped a forwarded frame", "device", dev, "err", err)
		}
		// Acknowledge what is delivered, also when this stream only
		// repeated it (a device that failed over resends what the old
		// instance may not have forwarded): the vitals service
		// acknowledges the device only then.
		if last > acked || (last > 0 && isReliable(m.GetValue())) {
			acked = last
			ack, _ := frame.Append(nil, frame.NewAck(last, s.now()))
			if err := st.Send(&vitalsrpc.Msg{Value: ack}); err != nil {
				return err
			}
		}
	}
}

// isReliable reads a frame's Reliable flag without decoding it.
func isReliable(raw []byte) bool {
	return len(raw) > 5 && frame.Flags(raw[5])&frame.Reliable != 0
}

func (s *Station) device(name string) *device {
	d := s.devices[name]
	if d == nil {
		d = &device{recv: reliable.NewReceiver(reliable.ReceiverOptions{})}
		s.devices[name] = d
	}
	return d
}

// Accept delivers one encoded frame of a device: in order, once.
func (s *Station) Accept(dev string, raw []byte) error {
	_, err := s.accept(dev, raw)
	return err
}

// accept is Accept; it returns the device's highest reliable sequence
// delivered so far.
func (s *Station) accept(dev string, raw []byte) (uint64, error) {
	now := s.now()
	s.mu.Lock()
	d := s.device(dev)
	deliver, _, err := d.recv.Accept(raw, now)
	out := make([]Delivered, 0, len(deliver))
	for _, f := range deliver {
		if f.Type.Control() {
			continue
		}
		age := now.Sub(f.DeviceTime)
		c := ClassOf(f.Priority)
		if len(s.lat[c]) < maxSamples {
			s.lat[c] = append(s.lat[c], age)
		}
		if f.Flags&frame.Reliable != 0 {
			d.reliable++
			d.last = f.Seq
		} else {
			d.bestEffort++
		}
		out = append(out, Delivered{Device: dev, Frame: f, Age: age})
	}
	subs := make([]chan<- Delivered, 0, len(s.subs))
	for c := range s.subs {
		subs = append(subs, c)
	}
	last := d.last
	s.mu.Unlock()
	for _, c := range subs {
		for _, d := range out {
			select {
			case c <- d:
			default: // a slow page misses frames; the station does not wait for it
			}
		}
	}
	return last, err
}

// Subscribe sends every frame delivered from now on to c (dropped when c
// is full) until the returned function is called.
func (s *Station) Subscribe(c chan<- Delivered) (cancel func()) {
	s.mu.Lock()
	s.subs[c] = struct{}{}
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		delete(s.subs, c)
		s.mu.Unlock()
	}
}

// DeviceStats is what the station delivered of one device.
type DeviceStats struct {
	Reliable, BestEffort int
	// LastReliable is the highest reliable sequence delivered.
	LastReliable uint64
	// Duplicates were dropped (a device's failover resends frames the
	// failed instance had already forwarded); Skipped gave up a gap.
	Duplicates, Skipped uint64
	Streams             int
}

// ClassStats are the ages of one class's delivered frames.
type ClassStats struct {
	Frames        int
	P50, P99, Max time.Duration
}

// Stats is a snapshot of the station.
type Stats struct {
	Devices map[string]DeviceStats
	Classes [numClasses]ClassStats
}

// Stats returns the counters and latency percentiles so far.
func (s *Station) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Stats{Devices: map[string]DeviceStats{}}
	for name, d := range s.devices {
		rs := d.recv.Stats()
		st.Devices[name] = DeviceStats{Reliable: d.reliable, BestEffort: d.bestEffort, LastReliable: d.last,
			Duplicates: rs.Duplicates, Skipped: rs.Skipped, Streams: d.streams}
	}
	for c := range numClasses {
		st.Classes[c] = percentiles(s.lat[c])
	}
	return st
}

// Reset forgets the latencies (not the devices): a benchmark phase
// starts afresh.
func (s *Station) Reset() {
	s.mu.Lock()
	for c := range s.lat {
		s.lat[c] = nil
	}
	s.mu.Unlock()
}

func percentiles(d []time.Duration) ClassStats {
	if len(d) == 0 {
		return ClassStats{}
	}
	d = slices.Clone(d)
	slices.Sort(d)
	at := func(q float64) time.Duration { return d[min(len(d)-1, int(q*float64(len(d))))] }
	return ClassStats{Frames: len(d), P50: at(0.50), P99: at(0.99), Max: d[len(d)-1]}
}
