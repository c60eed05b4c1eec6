// Command realtime measures the vitals example end to end through medmesh
// with mTLS on loopback: bedside devices stream (proxyless gRPC, xDS
// credentials, SVIDs from the control plane's CA) to the vitals service,
// which admits each frame by its priority (sidecar/sched) and forwards it
// to a nurse station; every hop is authorized by Consul intentions. A real
// Consul dev agent and an in-process control plane; it builds and starts
// everything itself.
//
//   - vitals_{emergency,critical,routine}_p99_ms: device clock to nurse
//     station, for the cardiac-arrest alarm, the ECG waveform and SpO2/BP
//     readings (nurse.Class), under a background flood (device status and
//     history sync at 3x the service's capacity); _unloaded without it.
//   - vitals_frames_lost: reliable frames sent and never delivered, over
//     every phase including a failover (must be 0).
//   - vitals_failover_gap_ms: the instance a device streams to is killed;
//     time until the device's stream is answered by the other one.
//   - vitals_frames_per_s: what the service delivers with 200 devices at
//     250 Hz ECG (25 chunks/s each, plus SpO2 and status), and whether it
//     kept up.
//   - webrtc_call_setup_ms (p50; _max_ms): pion clinician and patient
//     through the telehealth signalling service in the mesh, the
//     clinician's offer to connected; webrtc_datachannel_vitals_p99_ms:
//     vitals frames on the call's DataChannel, patient to clinician.
//
// It prints BENCH lines for `make bench`.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"time"

	"google.golang.org/grpc"

	"medmesh/examples/telehealth/peer"
	"medmesh/examples/vitals/bedside"
	"medmesh/examples/vitals/nurse"
	"medmesh/examples/vitals/vitalsrpc"
	"medmesh/examples/vitals/vitalsvc"
	"medmesh/sidecar/sched"
)

type config struct {
	window         time.Duration
	devices, fleet int
	limit          int
	work           time.Duration
	flood          int
	calls          int
}

func main() {
	var c config
	flag.DurationVar(&c.window, "window", 10*time.Second, "how long each latency phase measures")
	flag.IntVar(&c.devices, "devices", 20, "bedside devices in the latency phases")
	flag.IntVar(&c.fleet, "fleet", 200, "bedside devices in the throughput phase")
	flag.IntVar(&c.limit, "limit", 2, "the vitals service's scheduler limit in the latency phases")
	flag.DurationVar(&c.work, "work", time.Millisecond, "the vitals service's time per frame: capacity is limit/work")
	flag.IntVar(&c.flood, "flood", 3, "the background flood, in multiples of the service's capacity")
	flag.IntVar(&c.calls, "calls", 10, "telehealth calls to time")
	flag.Parse()
	if err := run(c); err != nil {
		fmt.Fprintln(os.Stderr, "realtime bench:", err)
		os.Exit(1)
	}
}

// Service names and metadata.
var (
	phiMeta   = map[string]string{"medmesh-kind": "vitals", "medmesh-protocol": "grpc"}
	nurseMeta = map[string]string{"medmesh-kind": "vitals", "medmesh-protocol": "grpc"}
)

// bench is one run: the mesh, the nurse station, and what was sent.
type bench struct {
	c       config
	m       *mesh
	station *nurse.Station
	devices []*bedside.Device
	log     *slog.Logger
}

func run(c config) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	m, err := startMesh(ctx)
	if err != nil {
		return err
	}
	defer m.stop()
	b := &bench{c: c, m: m, log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))}
	b.station = nurse.New(b.log, nil)
	for dst, srcs := range map[string][]string{"vitals": {"bedside-monitor"}, "vitals-bulk": {"bedside-monitor"},
		"nurse-station": {"vitals", "vitals-bulk"}} {
		if err := m.allow(dst, srcs...); err != nil {
			return err
		}
	}
	dir, err := m.svid("nurse-station")
	if err != nil {
		return err
	}
	if _, err := m.serve("nurse-station", "nurse-1", dir, nurseMeta, func(r vitalsrpc.Registrar) { vitalsrpc.RegisterNurse(r, b.station) }); err != nil {
		return err
	}

	// The latency phases: one vitals instance of known capacity.
	capacity := float64(c.limit) / c.work.Seconds()
	v1, err := b.vitals(ctx, "vitals", "vitals-1", sched.Config{Limit: c.limit}, c.work)
	if err != nil {
		return err
	}
	fleetCC, err := b.deviceConn("bedside-fleet", "vitals")
	if err != nil {
		return err
	}
	defer fleetCC.Close()
	// Devices run until the end (ctx): lost waits for their last frames.
	var ward []*bedside.Device
	for i := range c.devices {
		o := bedside.Typical(fmt.Sprintf("bed-%03d", i))
		o.AlarmEvery = 200 * time.Millisecond
		ward = append(ward, b.start(ctx, fleetCC, o))
	}
	if err := b.settle(ctx); err != nil {
		return err
	}
	unloaded := b.measure()
	fmt.Printf("unloaded: %d devices, capacity %.0f frames/s\n%s", c.devices, capacity, classTable(unloaded))

	// The flood: background history sync from other devices, beyond the
	// service's capacity.
	floodCC, err := b.deviceConn("history-fleet", "vitals")
	if err != nil {
		return err
	}
	defer floodCC.Close()
	const perFlooder = 200 // frames/s each
	flooders := int(float64(c.flood)*capacity) / perFlooder
	fctx, stopFlood := context.WithCancel(ctx)
	for i := range flooders {
		b.start(fctx, floodCC, bedside.Options{Device: fmt.Sprintf("sync-%03d", i), HistoryEvery: time.Second / perFlooder,
			StatusEvery: 100 * time.Millisecond, Reconnect: 50 * time.Millisecond})
	}
	time.Sleep(time.Second) // let the flood build up before measuring (a bench, not a test)
	b.station.Reset()
	time.Sleep(c.window)
	flooded := b.station.Stats()
	stopFlood()
	shed := v1.svc.Stats().Shed
	fmt.Printf("under a %dx background flood (%d devices x %d history frames/s): %d background frames shed\n%s",
		c.flood, flooders, perFlooder, shed, classTable(flooded))

	// Failover: a second instance, one device, the instance it streams to
	// killed.
	v2, err := b.vitals(ctx, "vitals", "vitals-2", sched.Config{Limit: c.limit}, c.work)
	if err != nil {
		return err
	}
	gap, err := b.failover(ctx, fleetCC, []*vitalsInstance{v1, v2})
	if err != nil {
		return err
	}

	// Throughput: the fleet at clinical rates on a service without an
	// artificial capacity; the ward falls quiet.
	for _, d := range ward {
		d.StopGenerating()
	}
	if _, err := b.vitals(ctx, "vitals-bulk", "vitals-bulk-1", sched.Config{Limit: 64}, 0); err != nil {
		return err
	}
	bulkCC, err := b.deviceConn("bulk-fleet", "vitals-bulk")
	if err != nil {
		return err
	}
	defer bulkCC.Close()
	var fleet []*bedside.Device
	for i := range c.fleet {
		fleet = append(fleet, b.start(ctx, bulkCC, bedside.Typical(fmt.Sprintf("ward-%03d", i))))
	}
	time.Sleep(2 * time.Second) // ramp up
	before := b.delivered()
	start := time.Now()
	time.Sleep(c.window)
	rate := float64(b.delivered()-before) / time.Since(start).Seconds()
	offered := float64(c.fleet) * (25 + 1 + 0.2 + 1.0/15)
	through := b.station.Stats()
	for _, d := range fleet {
		d.StopGenerating()
	}
	fmt.Printf("throughput: %d devices at 250 Hz ECG: offered %.0f frames/s, delivered %.0f frames/s\n%s", c.fleet, offered, rate, classTable(through))

	lost, err := b.lost(ctx)
	if err != nil {
		return err
	}

	setups, lats, err := b.webrtc(ctx, c.calls, 200)
	if err != nil {
		return fmt.Errorf("webrtc: %w", err)
	}
	fmt.Printf("webrtc: %d pion-to-pion calls through the mesh signalling: setup p50 %v max %v; %d DataChannel vitals frames: p50 %v p99 %v\n",
		len(setups), peer.Percentile(setups, 50).Round(time.Microsecond), peer.Percentile(setups, 100).Round(time.Microsecond),
		len(lats), peer.Percentile(lats, 50).Round(time.Microsecond), peer.Percentile(lats, 99).Round(time.Microsecond))
	fmt.Printf("BENCH vitals_emergency_p99_ms_unloaded=%.2f\n", ms(unloaded.Classes[nurse.Emergency].P99))
	fmt.Printf("BENCH vitals_critical_p99_ms_unloaded=%.2f\n", ms(unloaded.Classes[nurse.Critical].P99))
	fmt.Printf("BENCH vitals_routine_p99_ms_unloaded=%.2f\n", ms(unloaded.Classes[nurse.Routine].P99))
	fmt.Printf("BENCH vitals_emergency_p99_ms=%.2f\n", ms(flooded.Classes[nurse.Emergency].P99))
	fmt.Printf("BENCH vitals_critical_p99_ms=%.2f\n", ms(flooded.Classes[nurse.Critical].P99))
	fmt.Printf("BENCH vitals_routine_p99_ms=%.2f\n", ms(flooded.Classes[nurse.Routine].P99))
	fmt.Printf("BENCH vitals_background_shed_under_flood=%d\n", shed)
	fmt.Printf("BENCH vitals_frames_lost=%d\n", lost)
	fmt.Printf("BENCH vitals_failover_gap_ms=%.1f\n", ms(gap))
	fmt.Printf("BENCH vitals_frames_per_s=%.0f\n", rate)
	fmt.Printf("BENCH vitals_frames_per_s_offered=%.0f\n", offered)
	fmt.Printf("BENCH webrtc_call_setup_ms=%.2f\n", ms(peer.Percentile(setups, 50)))
	fmt.Printf("BENCH webrtc_call_setup_max_ms=%.2f\n", ms(peer.Percentile(setups, 100)))
	fmt.Printf("BENCH webrtc_datachannel_vitals_p99_ms=%.2f\n", ms(peer.Percentile(lats, 99)))
	return nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func classTable(s nurse.Stats) string {
	out := ""
	for c := range nurse.Background + 1 {
		cs := s.Classes[c]
		budget := "-"
		if b := c.Budget(); b > 0 {
			budget = b.String()
		}
		out += fmt.Sprintf("  %-10s frames %7d  p50 %7.2f ms  p99 %7.2f ms  max %7.2f ms  budget %s\n",
			c, cs.Frames, ms(cs.P50), ms(cs.P99), ms(cs.Max), budget)
	}
	return out
}

// vitalsInstance is one vitals service instance of the bench.
type vitalsInstance struct {
	svc  *vitalsvc.Server
	stop func()
}

func (b *bench) vitals(ctx context.Context, svc, id string, sc sched.Config, work time.Duration) (*vitalsInstance, error) {
	dir, err := b.m.svid(svc)
	if err != nil {
		return nil, err
	}
	fwd, err := b.m.dial(id+"-out", svc, dir, "nurse-station")
	if err != nil {
		return nil, err
	}
	v := vitalsvc.New(vitalsvc.Options{Sched: sched.New(sc), Work: work, Forward: vitalsvc.ForwardTo(fwd), Log: b.log})
	srv, err := b.m.serve(svc, id, dir, phiMeta, func(r vitalsrpc.Registrar) { vitalsrpc.RegisterVitals(r, v) })
	if err != nil {
		return nil, err
	}
	return &vitalsInstance{svc: v, stop: srv.Stop}, nil
}

func (b *bench) deviceConn(node, target string) (*grpc.ClientConn, error) {
	dir, err := b.m.svid("bedside-monitor")
	if err != nil {
		return nil, err
	}
	return b.m.dial(node, "bedside-monitor", dir, target)
}

func (b *bench) start(ctx context.Context, cc *grpc.ClientConn, o bedside.Options) *bedside.Device {
	if o.Log == nil {
		o.Log = b.log
	}
	d := bedside.New(o)
	b.devices = append(b.devices, d)
	go d.Run(ctx, bedside.OpenerFor(cc))
	return d
}

// settle waits until every device's frames reach the nurse station, then
// lets them run a second before the first measurement.
func (b *bench) settle(ctx context.Context) error {
	err := poll(ctx, time.Minute, "every device delivering", func() error {
		st := b.station.Stats()
		for _, d := range b.devices {
			if st.Devices[d.Name()].Reliable == 0 {
				ds := d.Stats()
				return fmt.Errorf("nothing delivered from %s (sent %d, acked %d, reconnects %d)", d.Name(), ds.Sent, ds.Acked, ds.Reconnects)
			}
		}
		return nil
	})
	time.Sleep(time.Second) // warm-up (a bench, not a test)
	return err
}

// measure runs one window and returns the station's figures for it.
func (b *bench) measure() nurse.Stats {
	b.station.Reset()
	time.Sleep(b.c.window)
	return b.station.Stats()
}

func (b *bench) delivered() int {
	n := 0
	for _, d := range b.station.Stats().Devices {
		n += d.Reliable + d.BestEffort
	}
	return n
}

// failover starts one device, kills the instance its stream lands on and
// returns the device's gap.
func (b *bench) failover(ctx context.Context, cc *grpc.ClientConn, instances []*vitalsInstance) (time.Duration, error) {
	streams := func() []int64 {
		var out []int64
		for _, in := range instances {
			out = append(out, in.svc.Stats().Streams)
		}
		return out
	}
	before := streams()
	o := bedside.Typical("bed-failover")
	o.AlarmEvery, o.Reconnect = 100*time.Millisecond, 10*time.Millisecond
	d := b.start(ctx, cc, o)
	victim := -1
	if err := poll(ctx, time.Minute, "the failover device's stream", func() error {
		for i, n := range streams() {
			if n > before[i] {
				victim = i
				return nil
			}
		}
		return fmt.Errorf("no new stream yet")
	}); err != nil {
		return 0, err
	}
	time.Sleep(time.Second) // stream for a while (a bench, not a test)
	instances[victim].stop()
	err := poll(ctx, time.Minute, "the device resuming on the other instance", func() error {
		if len(d.Stats().Gaps) == 0 {
			return fmt.Errorf("no gap measured yet")
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	fmt.Printf("failover: instance %d killed; the device resumed after %v\n", victim+1, d.Stats().Gaps[0])
	return d.Stats().Gaps[0], nil
}

// lost stops every device's generation, waits until what they sent is
// acknowledged (or a minute), and counts reliable frames sent but not
// delivered.
func (b *bench) lost(ctx context.Context) (uint64, error) {
	for _, d := range b.devices {
		d.StopGenerating()
	}
	var lost uint64
	err := poll(ctx, time.Minute, "every reliable frame acknowledged", func() error {
		st := b.station.Stats()
		lost = 0
		pending := 0
		for _, d := range b.devices {
			ds := d.Stats()
			pending += ds.Unacked
			if del := uint64(st.Devices[d.Name()].Reliable); ds.SentReliable > del {
				lost += ds.SentReliable - del
			}
		}
		if pending > 0 {
			return fmt.Errorf("%d reliable frames unacknowledged", pending)
		}
		return nil
	})
	return lost, err
}
