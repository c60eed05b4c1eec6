package integration

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"google.golang.org/grpc/xds"

	"medmesh/certs"
	"medmesh/controlplane"
	"medmesh/controlplane/bootstrap"
	"medmesh/examples/meshapp"
	"medmesh/examples/vitals/bedside"
	"medmesh/examples/vitals/frame"
	"medmesh/examples/vitals/nurse"
	"medmesh/examples/vitals/vitalsrpc"
	"medmesh/examples/vitals/vitalsvc"
	"medmesh/sidecar/sched"
)

// serveMesh runs a proxyless xDS gRPC server with mTLS (meshapp.NewServer,
// as the vitals binary does) for one instance with its own bootstrap and
// SVID, on 127.0.0.1:port.
func serveMesh(t *testing.T, cp *cpHandle, svidDir, svc, id string, port int, register func(vitalsrpc.Registrar)) *xds.GRPCServer {
	t.Helper()
	bs, err := bootstrap.Proxyless(bootstrap.Options{XDSAddress: cp.xdsAddr(), NodeID: id, Service: svc, SVIDDir: svidDir})
	if err != nil {
		t.Fatal(err)
	}
	srv, _, err := meshapp.NewServer(port, slog.New(slog.DiscardHandler), xds.BootstrapContentsForTesting(bs))
	if err != nil {
		t.Fatal(err)
	}
	register(srv)
	lis, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return srv
}

// TestVitalsFailoverLosesNoFrame is the failover drill: a bedside device
// streams through the mesh (mTLS, intentions) to one of two vitals
// instances, which forward to a nurse station; the instance the device
// streams to is killed mid-stream. The device reconnects through the mesh
// to the other instance and resumes from its last acknowledged frame:
// the nurse station gets every reliable (alarm, ECG, SpO2) frame exactly
// once and in order, and the failover gap is measured.
func TestVitalsFailoverLosesNoFrame(t *testing.T) {
	ca, err := certs.New(certs.Options{TrustDomain: "medmesh.local", StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	consul := startConsul(t, true)
	cp := startControlPlane(t, consulSource(consul), func(o *controlplane.Options) { o.Identities = ca })
	c := consul.Client()
	// Both are PHI services: only these callers.
	setIntention(t, c, "vitals", "bedside-monitor", api.IntentionActionAllow)
	setIntention(t, c, "nurse-station", "vitals", api.IntentionActionAllow)

	station := nurse.New(slog.New(slog.DiscardHandler), nil)
	delivered := make(chan nurse.Delivered, 1<<16)
	defer station.Subscribe(delivered)()
	nport := freePort(t)
	serveMesh(t, cp, svidDir(t, ca, "nurse-station"), "nurse-station", "nurse-1", nport, func(r vitalsrpc.Registrar) { vitalsrpc.RegisterNurse(r, station) })
	register(t, c, "nurse-station", "nurse-1", nport,
		map[string]string{"medmesh-kind": "vitals", "medmesh-protocol": "grpc"}, api.HealthPassing)

	type instance struct {
		svc *vitalsvc.Server
		srv *xds.GRPCServer
	}
	var instances []instance
	vitalsDir := svidDir(t, ca, "vitals")
	for i := 1; i <= 2; i++ {
		id := fmt.Sprintf("vitals-%d", i)
		fwd := dialXDSWith(t, bootstrap.Options{XDSAddress: cp.xdsAddr(), NodeID: id + "-out", Service: "vitals", SVIDDir: vitalsDir}, "nurse-station", true)
		svc := vitalsvc.New(vitalsvc.Options{Sched: sched.New(sched.Config{Limit: 8}), Forward: vitalsvc.ForwardTo(fwd)})
		port := freePort(t)
		srv := serveMesh(t, cp, vitalsDir, "vitals", id, port, func(r vitalsrpc.Registrar) { vitalsrpc.RegisterVitals(r, svc) })
		register(t, c, "vitals", id, port, map[string]string{"medmesh-kind": "vitals", "medmesh-protocol": "grpc"}, api.HealthPassing)
		instances = append(instances, instance{svc, srv})
	}

	cc := dialXDSWith(t, bootstrap.Options{XDSAddress: cp.xdsAddr(), NodeID: "bed-01", Service: "bedside-monitor",
		SVIDDir: svidDir(t, ca, "bedside-monitor")}, "vitals", true)
	opts := bedside.Typical("bed-01")
	opts.AlarmEvery, opts.StatusEvery, opts.Reconnect = 100*time.Millisecond, 200*time.Millisecond, 20*time.Millisecond
	opts.Sender.ResendAfter = 300 * time.Millisecond
	dev := bedside.New(opts)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go dev.Run(ctx, bedside.OpenerFor(cc))

	reliableDelivered := func() int { return station.Stats().Devices["bed-01"].Reliable }
	eventually(t, "the nurse station receives the device's frames through the mesh", func() error {
		if n := reliableDelivered(); n < 50 {
			return fmt.Errorf("%d reliable frames delivered", n)
		}
		return nil
	})

	// Kill the instance the device streams to, without a goodbye: its
	// connections reset, its Consul entry still says passing.
	victim := -1
	for i, in := range instances {
		if in.svc.Stats().Streams > 0 {
			victim = i
		}
	}
	if victim < 0 {
		t.Fatal("no vitals instance holds the device's stream")
	}
	before := reliableDelivered()
	instances[victim].srv.Stop()
	other := instances[1-victim].svc
	eventually(t, "the device resumes on the other instance", func() error {
		if st := dev.Stats(); st.Reconnects == 0 || len(st.Gaps) == 0 {
			return fmt.Errorf("reconnects %d, gaps %v", st.Reconnects, st.Gaps)
		}
		if n := reliableDelivered(); n < before+50 || other.Stats().Forwarded == 0 {
			return fmt.Errorf("%d reliable frames delivered (%d before the kill), %d forwarded by the other instance", n, before, other.Stats().Forwarded)
		}
		return nil
	})

	// Stop making frames and let every one be acknowledged: then the
	// nurse station must hold each reliable frame the device sent.
	dev.StopGenerating()
	eventually(t, "every reliable frame acknowledged", func() error {
		if st := dev.Stats(); st.Unacked != 0 || st.Acked != st.SentReliable {
			return fmt.Errorf("acked %d of %d, %d unacknowledged", st.Acked, st.SentReliable, st.Unacked)
		}
		return nil
	})
	st := dev.Stats()
	ds := station.Stats().Devices["bed-01"]
	if uint64(ds.Reliable) != st.SentReliable || ds.LastReliable != st.SentReliable {
		t.Errorf("nurse station delivered %d reliable frames up to seq %d; the device sent %d", ds.Reliable, ds.LastReliable, st.SentReliable)
	}
	if st.WindowFull != 0 {
		t.Errorf("%d reliable frames refused for a full window", st.WindowFull)
	}
	// In order, once: the subscription saw reliable sequences 1, 2, 3...
	var next uint64 = 1
	alarms := 0
	for len(delivered) > 0 {
		d := <-delivered
		if d.Frame.Flags&frame.Reliable == 0 {
			continue
		}
		if d.Frame.Seq != next {
			t.Fatalf("reliable frame %d delivered when %d was next", d.Frame.Seq, next)
		}
		next++
		if d.Frame.Type == frame.TypeCardiacArrest {
			alarms++
		}
	}
	if next-1 != st.SentReliable || alarms == 0 {
		t.Errorf("subscription saw reliable frames 1..%d with %d alarms; want 1..%d with alarms", next-1, alarms, st.SentReliable)
	}
	t.Logf("failover: %d reliable frames (%d alarms), gap %v, %d resends, %d duplicates dropped at the nurse station",
		st.SentReliable, alarms, st.Gaps, st.Resends, ds.Duplicates)
}
