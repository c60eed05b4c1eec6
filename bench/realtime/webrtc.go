package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/hashicorp/consul/api"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/xds"

	"medmesh/examples/meshapp"
	"medmesh/examples/telehealth/peer"
	"medmesh/examples/telehealth/signal"
	"medmesh/examples/telehealth/turnrelay"
	"medmesh/examples/vitals/frame"
)

// webrtc measures telehealth calls: the signalling service as a mesh
// service (mTLS, intentions), the site's TURN relay registered in Consul,
// pion clinician and patient dialing xds:///telehealth-signal with their
// own SVIDs. It returns the call setups and every vitals frame's latency
// on the DataChannel.
func (b *bench) webrtc(ctx context.Context, calls, frames int) (setups, lats []time.Duration, err error) {
	secret := []byte("bench-turn-secret")
	relay, err := turnrelay.Start(turnrelay.Config{ListenIP: net.IPv4(127, 0, 0, 1), UDPPort: -1, TCPPort: -1,
		RelayPortMin: 44100, RelayPortMax: 44199, Secret: secret})
	if err != nil {
		return nil, nil, err
	}
	defer relay.Close()
	c := b.m.consul.Client()
	if err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: "turn-1", Name: turnrelay.ServiceName,
		Address: "127.0.0.1", Port: relay.Port(), Meta: relay.Meta("", "")}); err != nil {
		return nil, nil, err
	}
	sig := signal.NewServer(signal.Options{Logger: slog.New(slog.DiscardHandler), Relays: turnrelay.Consul{Client: c}, TURNSecret: secret})
	dir, err := b.m.svid(signal.Service)
	if err != nil {
		return nil, nil, err
	}
	bs, err := b.m.bootstrap("telehealth-signal-1", signal.Service, dir)
	if err != nil {
		return nil, nil, err
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	port := lis.Addr().(*net.TCPAddr).Port
	srv, _, err := meshapp.NewServer(port, b.log, xds.BootstrapContentsForTesting(bs))
	if err != nil {
		return nil, nil, err
	}
	sig.RegisterGRPC(srv)
	go srv.Serve(lis)
	defer srv.Stop()
	if err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: "telehealth-signal-1", Name: signal.Service,
		Address: "127.0.0.1", Port: port, Meta: signal.Meta("")}); err != nil {
		return nil, nil, err
	}
	if err := b.m.allow(signal.Service, "clinician-app", "patient-app"); err != nil {
		return nil, nil, err
	}
	dialer := func(svc string) (peer.Dialer, error) {
		dir, err := b.m.svid(svc)
		if err != nil {
			return nil, err
		}
		cc, err := b.m.dial(svc+"-1", svc, dir, signal.Service)
		if err != nil {
			return nil, err
		}
		return func(ctx context.Context) (signal.ClientConn, error) { return signal.Dial(ctx, cc) }, nil
	}
	clin, err := dialer("clinician-app")
	if err != nil {
		return nil, nil, err
	}
	pat, err := dialer("patient-app")
	if err != nil {
		return nil, nil, err
	}
	// The first joins wait for the mesh's routes and certificates
	// (Unavailable until then); the measured calls come after.
	for i, d := range []peer.Dialer{clin, pat} {
		if err := poll(ctx, time.Minute, "the signalling service routed", func() error {
			conn, err := d(ctx)
			if err != nil {
				return err
			}
			call, err := peer.Join(ctx, conn, peer.Options{Role: signal.RoleClinician, Call: fmt.Sprintf("warm-up-%d", i), Kind: "video-visit", LoopbackOnly: true})
			if err != nil {
				if status.Code(errors.Unwrap(err)) != codes.Unavailable {
					return fmt.Errorf("%w (not Unavailable: giving up is for poll's deadline)", err)
				}
				return err
			}
			call.Close()
			return nil
		}); err != nil {
			return nil, nil, err
		}
	}
	for i := range calls {
		r, err := peer.MeasureCall(ctx, clin, pat, peer.MeasureOptions{
			Call: fmt.Sprintf("bench-visit-%d", i), Kind: "video-visit", Frames: frames, Interval: 10 * time.Millisecond,
			Codec: peer.VitalsFrames{Type: frame.TypeSpO2}, Base: peer.Options{LoopbackOnly: true, UDPPortMin: 44200, UDPPortMax: 44299},
		})
		if err != nil {
			return nil, nil, fmt.Errorf("call %d: %w", i, err)
		}
		if r.Frames != frames || r.Bad != 0 || r.OutOfOrder != 0 {
			return nil, nil, fmt.Errorf("call %d: %d of %d frames, %d bad, %d out of order", i, r.Frames, frames, r.Bad, r.OutOfOrder)
		}
		setups, lats = append(setups, r.Setup), append(lats, r.Latencies...)
	}
	return setups, lats, nil
}
