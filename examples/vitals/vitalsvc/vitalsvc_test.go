package vitalsvc_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"medmesh/examples/vitals/bedside"
	"medmesh/examples/vitals/frame"
	"medmesh/examples/vitals/nurse"
	"medmesh/examples/vitals/vitalsrpc"
	"medmesh/examples/vitals/vitalsvc"
	"medmesh/internal/testutil"
	"medmesh/sidecar/sched"
)

// serve runs s on a plain gRPC server on loopback and returns a client
// connection to it: these tests are about the service, not the mesh
// (integration/vitals_test.go runs it through the mesh).
func serve(t *testing.T, s vitalsrpc.VitalsServer) *grpc.ClientConn {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	vitalsrpc.RegisterVitals(srv, s)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// gate is a nurse station that takes a frame only when the test lets it,
// and records the order frames reached it.
type gate struct {
	mu     sync.Mutex
	order  []frame.Frame
	tokens chan struct{}
}

func (g *gate) Open(context.Context, string) (vitalsvc.Sink, error) { return &gateSink{g: g}, nil }

type gateSink struct{ g *gate }

func (s *gateSink) Send(raw []byte) error {
	<-s.g.tokens
	f, err := frame.Decode(raw)
	if err != nil {
		return err
	}
	s.g.mu.Lock()
	s.g.order = append(s.g.order, f)
	s.g.mu.Unlock()
	return nil
}

func (s *gateSink) Acked() (uint64, error) { select {} }
func (s *gateSink) Close() error           { return nil }

func (g *gate) forwarded() []frame.Frame {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]frame.Frame(nil), g.order...)
}

// TestAlarmOvertakesQueuedBackground: with the service's one slot busy and
// background frames of other devices queued at the scheduler, an alarm
// that arrives last is the next frame forwarded.
func TestAlarmOvertakesQueuedBackground(t *testing.T) {
	sc := sched.New(sched.Config{Limit: 1, CriticalReserve: -1})
	g := &gate{tokens: make(chan struct{}, 100)}
	cc := serve(t, vitalsvc.New(vitalsvc.Options{Sched: sc, Forward: g}))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// Four devices flood history sync; the first frame takes the slot
	// and waits in the gate, the next ones queue.
	for i := range 4 {
		d := bedside.New(bedside.Options{Device: fmt.Sprintf("sync-%d", i), HistoryEvery: time.Millisecond, Reconnect: time.Millisecond})
		go d.Run(ctx, bedside.OpenerFor(cc))
	}
	queued := func(p int) int { return sc.Stats()["vitals"].Queued[p] }
	testutil.Poll(t, 10*time.Second, "background frames queued behind the busy slot", func() bool {
		return sc.Stats()["vitals"].Inflight == 1 && queued(int(frame.Background)) >= 3
	})

	alarm := bedside.New(bedside.Options{Device: "bed-01", Reconnect: time.Millisecond})
	go alarm.Run(ctx, bedside.OpenerFor(cc))
	alarm.Alarm()
	testutil.Poll(t, 10*time.Second, "the alarm queued", func() bool { return queued(int(frame.Critical)) == 1 })

	// One frame through: the one in the slot. The next is the alarm.
	g.tokens <- struct{}{}
	g.tokens <- struct{}{}
	testutil.Poll(t, 10*time.Second, "two frames forwarded", func() bool { return len(g.forwarded()) >= 2 })
	got := g.forwarded()
	if got[0].Type != frame.TypeHistorySync || got[1].Type != frame.TypeCardiacArrest {
		t.Fatalf("forwarded %s then %s; want the history frame in service, then the alarm ahead of the %d queued", got[0].Type, got[1].Type, queued(int(frame.Background)))
	}
}

// acker is a nurse station that takes every frame at once.
type acker struct{ st *nurse.Station }

func (a acker) Open(_ context.Context, dev string) (vitalsvc.Sink, error) {
	return &ackSink{st: a.st, dev: dev, acks: make(chan uint64, 1024)}, nil
}

type ackSink struct {
	st   *nurse.Station
	dev  string
	acks chan uint64
}

func (s *ackSink) Send(raw []byte) error {
	if err := s.st.Accept(s.dev, raw); err != nil {
		return err
	}
	if raw[5]&byte(frame.Reliable) != 0 {
		s.acks <- s.st.Stats().Devices[s.dev].LastReliable
	}
	return nil
}
func (s *ackSink) Acked() (uint64, error) { return <-s.acks, nil }
func (s *ackSink) Close() error           { return nil }

// TestCorruptFrameIsAskedForAgain: a frame damaged on the way is never
// forwarded; the service asks for it again and the device resends it.
func TestCorruptFrameIsAskedForAgain(t *testing.T) {
	st := nurse.New(slog.New(slog.DiscardHandler), nil)
	svc := vitalsvc.New(vitalsvc.Options{Forward: acker{st}})
	cc := serve(t, svc)
	// Bounded: a service that never asks again fails the test, not hangs it.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := vitalsrpc.OpenStream(ctx, cc, "bed-01")
	if err != nil {
		t.Fatal(err)
	}
	send := func(f frame.Frame, corrupt bool) {
		raw, err := frame.Append(nil, f)
		if err != nil {
			t.Fatal(err)
		}
		if corrupt {
			raw[len(raw)-3] ^= 0x40 // a bit flipped in the payload
		}
		if err := stream.Send(&vitalsrpc.Msg{Value: raw}); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	spo2 := func(seq uint64) frame.Frame {
		f := frame.New(frame.TypeSpO2, now, []byte{97, 72})
		f.Flags, f.Seq = frame.Reliable, seq
		return f
	}
	send(frame.NewHello(1, 1, now), false)
	send(spo2(1), false)
	send(spo2(2), true) // damaged
	send(spo2(3), false)
	// The service answers: an Ack for the Hello, a ResendRequest for 2
	// (held until 1 is delivered), Acks.
	var requested bool
	for !requested {
		m, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		f, err := frame.Decode(m.GetValue())
		if err != nil {
			t.Fatal(err)
		}
		if f.Type == frame.TypeResendRequest {
			if f.Seq != 2 {
				t.Fatalf("resend request for %d; want 2", f.Seq)
			}
			requested = true
		}
	}
	if got := st.Stats().Devices["bed-01"].Reliable; got != 1 {
		t.Fatalf("%d frames delivered before the resend; want 1 (3 waits for 2)", got)
	}
	r := spo2(2)
	r.Flags |= frame.Resent
	send(r, false)
	testutil.Poll(t, 10*time.Second, "frames 1..3 delivered in order", func() bool {
		d := st.Stats().Devices["bed-01"]
		return d.Reliable == 3 && d.LastReliable == 3
	})
	if c := svc.Stats().Corrupt; c != 1 {
		t.Errorf("corrupt frames counted: %d; want 1", c)
	}
}

// TestNoVitalsInLogs: the services log counts and device handles, never a
// payload, even for corrupt frames, failed forwards and broken streams.
func TestNoVitalsInLogs(t *testing.T) {
	var logs bytes.Buffer
	var mu sync.Mutex
	log := slog.New(slog.NewTextHandler(&lockedWriter{w: &logs, mu: &mu}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	st := nurse.New(log, nil)
	failing := &flaky{inner: acker{st}}
	svc := vitalsvc.New(vitalsvc.Options{Forward: failing, Log: log})
	cc := serve(t, svc)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const canary = "MRN-CANARY-4471"
	d := bedside.New(bedside.Options{Device: "bed-07", ECGEvery: time.Millisecond, ECGSamples: len(canary) / 2, Log: log, Reconnect: time.Millisecond,
		Payload: func(frame.Type) []byte { return []byte(canary) }})
	go d.Run(ctx, bedside.OpenerFor(cc))
	testutil.Poll(t, 10*time.Second, "frames delivered across failed forwards", func() bool {
		return st.Stats().Devices["bed-07"].Reliable > 50 && failing.failures() > 0
	})
	// A corrupt frame straight to the service.
	stream, err := vitalsrpc.OpenStream(ctx, cc, "bed-08")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := frame.Append(nil, frame.New(frame.TypeSpO2, time.Now(), []byte(canary)))
	raw[len(raw)-1] ^= 1
	stream.Send(&vitalsrpc.Msg{Value: raw})
	testutil.Poll(t, 10*time.Second, "the corrupt frame counted", func() bool { return svc.Stats().Corrupt > 0 })
	cancel()
	mu.Lock()
	defer mu.Unlock()
	if strings.Contains(logs.String(), canary) || strings.Contains(logs.String(), fmt.Sprintf("%x", canary)) {
		t.Fatalf("a payload reached the logs:\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), "bed-07") {
		t.Errorf("the logs never name the device handle; the test did not exercise the logging paths:\n%s", logs.String())
	}
}

type lockedWriter struct {
	w  *bytes.Buffer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// flaky fails every third forwarding stream's first send.
type flaky struct {
	inner vitalsvc.Forwarder
	mu    sync.Mutex
	n     int
	fails int
}

func (f *flaky) Open(ctx context.Context, dev string) (vitalsvc.Sink, error) {
	s, err := f.inner.Open(ctx, dev)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n++
	if f.n%3 == 1 {
		f.fails++
		return failSink{s}, nil
	}
	return s, err
}

func (f *flaky) failures() int { f.mu.Lock(); defer f.mu.Unlock(); return f.fails }

type failSink struct{ vitalsvc.Sink }

func (failSink) Send([]byte) error { return fmt.Errorf("nurse station unreachable") }
