package main

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"medmesh/examples/telehealth/peer"
	tsignal "medmesh/examples/telehealth/signal"
	"medmesh/internal/testutil"
)

const testCall = "visit-test-5f2c9a1e"

func TestParseFlags(t *testing.T) {
	o, err := parseFlags([]string{"--role", "patient", "--call", testCall})
	if err != nil {
		t.Fatal(err)
	}
	if o.service != "patient-app" || o.id != "patient-app-"+strconv.Itoa(os.Getpid()) || o.kind != "video-visit" ||
		o.report != 5*time.Second || o.logFormat != "text" || o.udpPortMin != 0 || o.udpPortMax != 0 || o.loopbackOnly {
		t.Errorf("patient defaults: %+v", o)
	}
	o, err = parseFlags([]string{"--role=clinician", "--call=" + testCall, "--id=clinician-1", "--service=clinician-app",
		"--udp-ports=49400-49599", "--report=1s", "--log-format=json", "--loopback-only", "--svid-dir=/run/svid/c1"})
	if err != nil {
		t.Fatal(err)
	}
	if o.service != "clinician-app" || o.id != "clinician-1" || o.udpPortMin != 49400 || o.udpPortMax != 49599 ||
		o.report != time.Second || o.logFormat != "json" || !o.loopbackOnly || o.svidDir != "/run/svid/c1" {
		t.Errorf("clinician: %+v", o)
	}
	if o, _ := parseFlags([]string{"--role=clinician", "--call=" + testCall}); o.service != "clinician-station" {
		t.Errorf("clinician's default service: %q", o.service)
	}
	po := o.peerOptions(nil)
	if po.Role != tsignal.RoleClinician || po.SendVideo || po.Vitals != nil || !po.LoopbackOnly || po.UDPPortMin != 49400 {
		t.Errorf("clinician's party: %+v", po)
	}
	pat, _ := parseFlags([]string{"--role=patient", "--call=" + testCall, "--frame-every=10ms"})
	if po := pat.peerOptions(nil); !po.SendVideo || po.Vitals == nil || po.Vitals.Interval != 10*time.Millisecond || po.Vitals.Count != 0 {
		t.Errorf("patient's party: %+v", po)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--call", testCall}, "--role"},
		{[]string{"--role", "nurse", "--call", testCall}, "--role"},
		{[]string{"--role", "patient"}, "--call is required"},
		{[]string{"--role", "patient", "--call", "short"}, "call must be"},
		{[]string{"--role", "patient", "--call", testCall, "--kind", "Video Visit"}, "kind must be"},
		{[]string{"--role", "patient", "--call", testCall, "--udp-ports", "49599-49400"}, "--udp-ports"},
		{[]string{"--role", "patient", "--call", testCall, "--udp-ports", "0-10"}, "--udp-ports"},
		{[]string{"--role", "patient", "--call", testCall, "--udp-ports", "49400"}, "--udp-ports"},
		{[]string{"--role", "patient", "--call", testCall, "--udp-ports", "49400-70000"}, "--udp-ports"},
		{[]string{"--role", "patient", "--call", testCall, "--log-format", "xml"}, "--log-format"},
		{[]string{"--role", "patient", "--call", testCall, "--report", "0s"}, "--report"},
		{[]string{"--role", "patient", "--call", testCall, "extra"}, "unexpected arguments"},
	} {
		_, err := parseFlags(tc.args)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v; want one naming %q", tc.args, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), testCall) {
			t.Errorf("%q: the error quotes the call name: %v", tc.args, err)
		}
	}
}

// The "call" line, logged as JSON, decodes into the peer.Report it was
// made from: the keys are the JSON names a demo reads. A clinician's line
// has RTP packets and latencies, a patient's the frames it sent.
func TestReportLine(t *testing.T) {
	for _, r := range []peer.Report{
		{Role: tsignal.RoleClinician, State: peer.StateConnected, SetupMS: 12.5, RTPPackets: 300, Frames: 250, FramesBadCRC: 1,
			FrameP50MS: 0.12, FrameP99MS: 0.59, Reconnects: 2},
		{Role: tsignal.RoleClinician, State: peer.StateConnecting},
		{Role: tsignal.RolePatient, State: peer.StateFailed, FramesSent: 250, Reconnects: 1},
	} {
		var buf bytes.Buffer
		slog.New(slog.NewJSONHandler(&buf, nil)).Info(peer.ReportMessage, r.LogAttrs()...)
		var got peer.Report
		if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
			t.Fatal(err)
		}
		if got != r {
			t.Errorf("logged %s\ndecoded %+v\nwant    %+v", buf.Bytes(), got, r)
		}
		var keys map[string]any
		json.Unmarshal(buf.Bytes(), &keys)
		if keys["msg"] != "call" {
			t.Errorf("message %v; want call", keys["msg"])
		}
		_, rtp := keys["rtp_packets"]
		_, sent := keys["frames_sent"]
		if clin := r.Role == tsignal.RoleClinician; rtp != clin || sent == clin {
			t.Errorf("%s's line: %s", r.Role, buf.Bytes())
		}
		if _, ok := keys["setup_ms"]; ok != (r.SetupMS > 0) {
			t.Errorf("setup_ms before it is known, or missing after: %s", buf.Bytes())
		}
	}
}

// startSignal serves the signalling service on plain gRPC on loopback
// (the mesh path, mTLS and intentions, is integration/telehealth_test.go's).
func startSignal(t *testing.T) peer.Dialer {
	t.Helper()
	srv := tsignal.NewServer(tsignal.Options{PlaintextOpens: true})
	gs := grpc.NewServer()
	srv.RegisterGRPC(gs)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return func(ctx context.Context) (tsignal.ClientConn, error) {
		return tsignal.Dial(ctx, cc, grpc.WaitForReady(true))
	}
}

// running is a party running until stop.
type running struct {
	p    *party
	stop context.CancelFunc
	done chan struct{}
}

func startParty(t *testing.T, ctx context.Context, role string, dial peer.Dialer, logs *testutil.SyncBuffer) *running {
	t.Helper()
	o, err := parseFlags([]string{"--role", role, "--call", testCall, "--loopback-only", "--frame-every", "10ms"})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(logs, nil)).With("instance", o.id)
	ctx, stop := context.WithCancel(ctx)
	r := &running{p: newParty(o.peerOptions(log), dial, log), stop: stop, done: make(chan struct{})}
	go func() { defer close(r.done); r.p.run(ctx) }()
	t.Cleanup(func() { r.stop(); <-r.done })
	return r
}

// waitReport polls the party's report until cond holds, and returns it.
func waitReport(t *testing.T, p *party, what string, cond func(peer.Report) bool) peer.Report {
	t.Helper()
	var r peer.Report
	testutil.Poll(t, time.Minute, what, func() bool { r = p.report(); return cond(r) })
	return r
}

// The command's core: two parties meet by joining the same call name;
// the patient's video and vitals frames reach the clinician; the patient
// restarts, the clinician joins again and a new call comes up, counted
// as a reconnect, with the totals carried over. Nothing in the parties'
// logs names the call, an address or a description.
func TestPartiesRejoinAfterARestart(t *testing.T) {
	dial := startSignal(t)
	logs := &testutil.SyncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	t.Cleanup(func() {
		if t.Failed() || testing.Verbose() {
			t.Logf("parties' logs:\n%s", logs.String())
		}
	})

	clin := startParty(t, ctx, tsignal.RoleClinician, dial, logs)
	pat := startParty(t, ctx, tsignal.RolePatient, dial, logs)
	first := waitReport(t, clin.p, "video and vitals frames at the clinician", func(r peer.Report) bool {
		return r.State == peer.StateConnected && r.RTPPackets > 0 && r.Frames > 0
	})
	if first.SetupMS <= 0 || first.Reconnects != 0 || first.FramesBadCRC != 0 {
		t.Errorf("clinician, first call: %+v", first)
	}
	if r := waitReport(t, pat.p, "frames sent by the patient", func(r peer.Report) bool { return r.FramesSent > 0 }); r.State != peer.StateConnected || r.Frames != 0 {
		t.Errorf("patient, first call: %+v", r)
	}

	// The patient's program stops and starts again.
	pat.stop()
	<-pat.done
	ended := waitReport(t, clin.p, "the clinician to see the call end", func(r peer.Report) bool { return r.Reconnects == 1 })
	pat = startParty(t, ctx, tsignal.RolePatient, dial, logs)
	var last peer.Report
	again := waitReport(t, clin.p, "frames of the second call at the clinician", func(r peer.Report) bool {
		if r.FrameP50MS > 0 {
			last = r
		}
		return r.State == peer.StateConnected && r.Frames > ended.Frames && r.RTPPackets > ended.RTPPackets
	})
	if again.Reconnects != 1 || again.SetupMS <= 0 || again.FramesBadCRC != 0 {
		t.Errorf("clinician, second call: %+v; want one reconnect", again)
	}
	if last.FrameP50MS == 0 || last.FrameP99MS < last.FrameP50MS {
		t.Errorf("frame latency of the second call: p50 %v, p99 %v", last.FrameP50MS, last.FrameP99MS)
	}
	if r := pat.p.report(); r.Reconnects != 0 {
		t.Errorf("the restarted patient: %+v; want no reconnect", r)
	}
	clin.stop()
	<-clin.done
	if r := clin.p.report(); r.State != peer.StateStopped || r.Frames < again.Frames {
		t.Errorf("the clinician, stopped: %+v", r)
	}

	out := logs.String()
	for _, bad := range []string{testCall, "127.0.0.1", "v=0", "candidate:", "ufrag"} {
		if strings.Contains(out, bad) {
			t.Errorf("parties' logs show %q:\n%s", bad, out)
		}
	}
	if !strings.Contains(out, `msg="call ended; joining again"`) || !strings.Contains(out, `reason="the other party left"`) {
		t.Errorf("the clinician's log does not say why it joined again:\n%s", out)
	}
}
