package integration

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/xds"

	"medmesh/certs"
	"medmesh/controlplane"
	"medmesh/controlplane/bootstrap"
	"medmesh/examples/meshapp"
	"medmesh/examples/telehealth/peer"
	"medmesh/examples/telehealth/signal"
	"medmesh/examples/telehealth/turnrelay"
	"medmesh/internal/testutil"
)

// telehealthMesh is a site with the telehealth services: Consul, a
// control plane with mTLS, the signalling service as a proxyless xDS
// server, and the site's TURN relay, both registered in Consul.
type telehealthMesh struct {
	ca     *certs.CA
	consul *api.Client
	cp     *cpHandle
	signal *signal.Server
	logs   *testutil.SyncBuffer
	relay  *turnrelay.Relay
	// httpAddr is the browser door.
	httpAddr string
}

const telehealthSecret = "telehealth-test-turn-secret"

// startTelehealthMesh starts the site; callers lists the services an
// intention allows to call the signalling service.
func startTelehealthMesh(t *testing.T, callers ...string) *telehealthMesh {
	t.Helper()
	ca, err := certs.New(certs.Options{TrustDomain: "medmesh.local", StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	consul := startConsul(t, true)
	m := &telehealthMesh{ca: ca, consul: consul.Client(), logs: &testutil.SyncBuffer{}}
	m.cp = startControlPlane(t, consulSource(consul), func(o *controlplane.Options) { o.Identities = ca })

	// The site's relay: UDP and TCP, relayed ports in a fixed range.
	m.relay, err = turnrelay.Start(turnrelay.Config{ListenIP: net.IPv4(127, 0, 0, 1), UDPPort: -1, TCPPort: -1,
		RelayPortMin: 44000, RelayPortMax: 44099, Secret: []byte(telehealthSecret)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.relay.Close() })
	register(t, m.consul, turnrelay.ServiceName, "turn-1", m.relay.Port(), m.relay.Meta("", ""), api.HealthPassing)

	// The signalling service, registered as examples/telehealth does it.
	log := slog.New(slog.NewTextHandler(m.logs, nil))
	m.signal = signal.NewServer(signal.Options{Logger: log, Relays: turnrelay.Consul{Client: m.consul}, TURNSecret: []byte(telehealthSecret)})
	port := freePort(t)
	bs, err := bootstrap.Proxyless(bootstrap.Options{XDSAddress: m.cp.xdsAddr(), NodeID: "telehealth-signal-1", Service: signal.Service,
		SVIDDir: svidDir(t, ca, signal.Service)})
	if err != nil {
		t.Fatal(err)
	}
	srv, _, err := meshapp.NewServer(port, log, xds.BootstrapContentsForTesting(bs))
	if err != nil {
		t.Fatal(err)
	}
	m.signal.RegisterGRPC(srv)
	lis, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	register(t, m.consul, signal.Service, "telehealth-signal-1", port, signal.Meta(""), api.HealthPassing)
	if len(callers) > 0 {
		var sources []*api.SourceIntention
		for _, c := range callers {
			sources = append(sources, &api.SourceIntention{Name: c, Action: api.IntentionActionAllow})
		}
		if _, _, err := m.consul.ConfigEntries().Set(&api.ServiceIntentionsConfigEntry{Kind: api.ServiceIntentions, Name: signal.Service, Sources: sources}, nil); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("signalling logs:\n%s", m.logs.String())
		}
	})
	return m
}

// dialSignal is a workload of service svc dialing xds:///telehealth-signal
// with its own SVID.
func (m *telehealthMesh) dialSignal(t *testing.T, svc, node string) *grpc.ClientConn {
	t.Helper()
	return dialXDSWith(t, bootstrap.Options{XDSAddress: m.cp.xdsAddr(), NodeID: node, Service: svc, SVIDDir: svidDir(t, m.ca, svc)}, signal.Service, true)
}

// meshDialer opens Join streams on cc.
func meshDialer(cc *grpc.ClientConn) peer.Dialer {
	return func(ctx context.Context) (signal.ClientConn, error) { return signal.Dial(ctx, cc) }
}

// joinWhenRouted joins a call as an allowed caller, retrying while the
// mesh is still sending the client its routes and certificates
// (Unavailable) and the server the RBAC with the caller's intention
// (PermissionDenied: the intention is written after the server
// registers, and reaches its listener a moment later).
func joinWhenRouted(t *testing.T, ctx context.Context, dial peer.Dialer, o peer.Options) (*peer.Call, error) {
	t.Helper()
	return joinRetrying(t, ctx, dial, o, codes.Unavailable, codes.PermissionDenied)
}

// joinRetrying joins a call, retrying while the join fails with one of
// the codes.
func joinRetrying(t *testing.T, ctx context.Context, dial peer.Dialer, o peer.Options, retry ...codes.Code) (*peer.Call, error) {
	t.Helper()
	for {
		conn, err := dial(ctx)
		var c *peer.Call
		if err == nil {
			c, err = peer.Join(ctx, conn, o)
		}
		if !slices.Contains(retry, status.Code(errors.Unwrap(err))) || ctx.Err() != nil {
			if c != nil {
				t.Cleanup(func() { c.Close() })
			}
			return c, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(100 * time.Millisecond): // polling interval, not synchronisation
		}
	}
}

// TestTelehealthCallThroughMesh: a clinician and a patient service, each
// with its own SVID, set up a pion-to-pion call through the signalling
// service in the mesh (xds:///telehealth-signal, mTLS, intentions); the
// patient's video RTP reaches the clinician on host candidates, and the
// server logs who joined which kind of call.
func TestTelehealthCallThroughMesh(t *testing.T) {
	m := startTelehealthMesh(t, "clinician-app", "patient-app")
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	clinDial := meshDialer(m.dialSignal(t, "clinician-app", "clinician-1"))
	patDial := meshDialer(m.dialSignal(t, "patient-app", "patient-1"))
	base := peer.Options{Call: "visit-0001-abcdef", Kind: "video-visit", LoopbackOnly: true, UDPPortMin: 44100, UDPPortMax: 44199}

	co := base
	co.Role = signal.RoleClinician
	clin, err := joinWhenRouted(t, ctx, clinDial, co)
	if err != nil {
		t.Fatalf("clinician join through the mesh: %v", err)
	}
	if clin.Invite() == "" {
		t.Error("the opening mesh party got no invite for the browser")
	}
	po := base
	po.Role, po.SendVideo = signal.RolePatient, true
	if _, err := joinWhenRouted(t, ctx, patDial, po); err != nil {
		t.Fatalf("patient join through the mesh: %v", err)
	}
	s := waitStats(t, ctx, clin, "video RTP at the clinician", func(s peer.Stats) bool { return s.VideoPackets >= 30 && s.DataChannelOpen })
	if s.RTPPayloadTypes[s.VideoPayloadType] != s.VideoPackets || s.VideoMimeType != "video/VP8" {
		t.Errorf("video: negotiated payload type %d (%s), packets by payload type %v", s.VideoPayloadType, s.VideoMimeType, s.RTPPayloadTypes)
	}
	if s.ICEServers != 1 {
		t.Errorf("signalling handed out %d ICE server entries; want the site's relay", s.ICEServers)
	}
	logs := m.logs.String()
	for _, want := range []string{
		"caller=spiffe://medmesh.local/ns/default/svc/clinician-app door=grpc role=clinician kind=video-visit",
		"caller=spiffe://medmesh.local/ns/default/svc/patient-app door=grpc role=patient kind=video-visit",
	} {
		if !strings.Contains(logs, want) {
			t.Errorf("signalling log lacks %q:\n%s", want, logs)
		}
	}
	if strings.Contains(logs, "v=0") || strings.Contains(logs, "candidate:") || strings.Contains(logs, base.Call) {
		t.Errorf("signalling log shows SDP, candidates or the call ID:\n%s", logs)
	}
}

// TestTelehealthRelayFromSite: with relay-only ICE the call's media goes
// through the site's TURN relay, which the signalling service found in
// Consul and handed out with credentials.
func TestTelehealthRelayFromSite(t *testing.T) {
	m := startTelehealthMesh(t, "clinician-app", "patient-app")
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	base := peer.Options{Call: "visit-0002-relay", Kind: "video-visit", LoopbackOnly: true, RelayOnly: true}
	co, po := base, base
	co.Role = signal.RoleClinician
	po.Role, po.SendVideo = signal.RolePatient, true
	clin, err := joinWhenRouted(t, ctx, meshDialer(m.dialSignal(t, "clinician-app", "clinician-1")), co)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := joinWhenRouted(t, ctx, meshDialer(m.dialSignal(t, "patient-app", "patient-1")), po); err != nil {
		t.Fatal(err)
	}
	s := waitStats(t, ctx, clin, "video RTP through the relay", func(s peer.Stats) bool { return s.VideoPackets >= 30 })
	if s.LocalCandidate != "relay" {
		t.Errorf("selected pair %s/%s; want relay", s.LocalCandidate, s.RemoteCandidate)
	}
	if n := m.relay.Allocations(); n < 2 {
		t.Errorf("the site's relay holds %d allocations; want one per party", n)
	}
}

// TestTelehealthCallerWithoutIntention: a workload with a valid SVID but
// no intention is refused by the signalling service's RBAC before its
// join reaches the service.
func TestTelehealthCallerWithoutIntention(t *testing.T) {
	m := startTelehealthMesh(t, "clinician-app")
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	dial := meshDialer(m.dialSignal(t, "billing", "billing-1"))
	// Retried only while unrouted: a refusal is the answer.
	_, err := joinRetrying(t, ctx, dial, peer.Options{Role: signal.RoleClinician, Call: "visit-0003-denied", Kind: "video-visit", LoopbackOnly: true},
		codes.Unavailable)
	if status.Code(errors.Unwrap(err)) != codes.PermissionDenied {
		t.Fatalf("join without an intention: %v; want PermissionDenied", err)
	}
	if m.signal.Calls() != 0 || strings.Contains(m.logs.String(), "joined") {
		t.Errorf("a refused caller reached the service: %d calls, logs:\n%s", m.signal.Calls(), m.logs.String())
	}
	// The allowed caller gets in on the same service.
	if _, err := joinWhenRouted(t, ctx, meshDialer(m.dialSignal(t, "clinician-app", "clinician-1")),
		peer.Options{Role: signal.RoleClinician, Call: "visit-0003-allowed", Kind: "video-visit", LoopbackOnly: true}); err != nil {
		t.Fatalf("allowed caller: %v", err)
	}
}

func waitStats(t *testing.T, ctx context.Context, c *peer.Call, what string, cond func(peer.Stats) bool) peer.Stats {
	t.Helper()
	for {
		s := c.Stats()
		if cond(s) {
			return s
		}
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s; stats %+v", what, s)
		case <-c.Ended():
			t.Fatalf("call ended waiting for %s: %v", what, c.Err())
		case <-time.After(10 * time.Millisecond): // polling interval, not synchronisation
		}
	}
}

// TestTelehealthCallMeasured measures, through the mesh signalling on
// loopback, the setup of pion-to-pion calls (the clinician's offer to
// connected) and, with a vitals codec, the DataChannel frame latency.
// It asserts what arrived, never how fast: the figures are logged.
func TestTelehealthCallMeasured(t *testing.T) {
	m := startTelehealthMesh(t, "clinician-app", "patient-app")
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	clinDial := meshDialer(m.dialSignal(t, "clinician-app", "clinician-1"))
	patDial := meshDialer(m.dialSignal(t, "patient-app", "patient-1"))
	// The first join waits for the mesh's routes and certificates; the
	// measured calls start after it.
	warm, err := joinWhenRouted(t, ctx, clinDial, peer.Options{Role: signal.RoleClinician, Call: "visit-warm-up-0", Kind: "video-visit", LoopbackOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	warm.Close()
	if _, err := joinWhenRouted(t, ctx, patDial, peer.Options{Role: signal.RoleClinician, Call: "visit-warm-up-1", Kind: "video-visit", LoopbackOnly: true}); err != nil {
		t.Fatal(err)
	}
	const calls, frames = 5, 200
	var setups, p99s, lats []time.Duration
	for i := range calls {
		r, err := peer.MeasureCall(ctx, clinDial, patDial, peer.MeasureOptions{
			Call: fmt.Sprintf("visit-measured-%d", i), Kind: "video-visit", Frames: frames, Interval: 10 * time.Millisecond,
			Codec: vitalsCodec, Base: peer.Options{LoopbackOnly: true, UDPPortMin: 44300, UDPPortMax: 44399},
		})
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		t.Logf("call %d: %s", i, r)
		if r.Setup <= 0 {
			t.Errorf("call %d: setup not measured", i)
		}
		if r.Frames != frames || r.OutOfOrder != 0 || r.Bad != 0 {
			t.Errorf("call %d: %d of %d frames, %d out of order, %d bad", i, r.Frames, frames, r.OutOfOrder, r.Bad)
		}
		setups, p99s = append(setups, r.Setup), append(p99s, r.FrameP99.Round(time.Microsecond))
		lats = append(lats, r.Latencies...)
	}
	t.Logf("TELEHEALTH call_setup_p50=%s call_setup_max=%s over %d calls; vitals_frame_latency_p99=%s (all %d frames of %d calls), p99 per call %v",
		peer.Percentile(setups, 50).Round(time.Microsecond), peer.Percentile(setups, 100).Round(time.Microsecond), calls,
		peer.Percentile(lats, 99).Round(time.Microsecond), len(lats), calls, p99s)
}
