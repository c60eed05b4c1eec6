package peer_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pion/turn/v5"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"medmesh/examples/telehealth/peer"
	"medmesh/examples/telehealth/signal"
	"medmesh/examples/telehealth/turnrelay"
)

// relayTLS is the TURN-over-TLS certificate, made in TestMain: pion's
// ICE agent verifies a relay's certificate against the system roots and
// offers no way to pass others, so the test's CA goes in through
// SSL_CERT_FILE before anything reads the system roots, as a hospital's
// CA is installed in its machines' trust store.
var relayTLS *tls.Config

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "telehealth-peer-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	relayTLS, err = loopbackCert(filepath.Join(dir, "ca.pem"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Setenv("SSL_CERT_FILE", filepath.Join(dir, "ca.pem"))
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// loopbackCert makes a self-signed certificate for 127.0.0.1 and writes
// it, as the trust anchor, to caFile.
func loopbackCert(caFile string) (*tls.Config, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "turn relay (test)"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		return nil, err
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}, nil
}

// staticRelays hands every site the same relay URLs.
type staticRelays []string

func (s staticRelays) RelayURLs(context.Context, string) ([]string, error) { return s, nil }

// startSignal serves the signalling service over plain gRPC on loopback
// (the mesh path, with mTLS and intentions, is in integration/).
func startSignal(t *testing.T, relays signal.RelayFinder, secret []byte) *grpc.ClientConn {
	t.Helper()
	srv := signal.NewServer(signal.Options{Relays: relays, TURNSecret: secret, PlaintextOpens: true})
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
	return cc
}

func join(t *testing.T, ctx context.Context, cc *grpc.ClientConn, o peer.Options) *peer.Call {
	t.Helper()
	conn, err := signal.Dial(ctx, cc)
	if err != nil {
		t.Fatal(err)
	}
	o.LoopbackOnly = true
	c, err := peer.Join(ctx, conn, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func waitConnected(t *testing.T, ctx context.Context, c *peer.Call) {
	t.Helper()
	select {
	case <-c.Connected():
	case <-c.Ended():
		t.Fatalf("call ended before connecting: %v", c.Err())
	case <-ctx.Done():
		t.Fatal("not connected before the test's deadline")
	}
}

// waitFor polls cond on a call's stats.
func waitFor(t *testing.T, ctx context.Context, what string, c *peer.Call, cond func(peer.Stats) bool) peer.Stats {
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

// A clinician and a patient on host candidates: the patient's video RTP
// reaches the clinician with the negotiated payload type.
func TestHostCall(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cc := startSignal(t, nil, nil)
	clin := join(t, ctx, cc, peer.Options{Role: signal.RoleClinician, Call: "call-host-1", Kind: "video-visit", UDPPortMin: 42000, UDPPortMax: 42099})
	pat := join(t, ctx, cc, peer.Options{Role: signal.RolePatient, Call: "call-host-1", Kind: "video-visit", SendVideo: true, UDPPortMin: 42000, UDPPortMax: 42099})
	waitConnected(t, ctx, clin)
	waitConnected(t, ctx, pat)
	s := waitFor(t, ctx, "video RTP", clin, func(s peer.Stats) bool { return s.VideoPackets >= 30 && s.DataChannelOpen })
	if s.RTPPayloadTypes[s.VideoPayloadType] != s.VideoPackets || s.VideoMimeType != "video/VP8" {
		t.Errorf("video: negotiated PT %d (%s), packets by PT %v", s.VideoPayloadType, s.VideoMimeType, s.RTPPayloadTypes)
	}
	if s.LocalCandidate != "host" || s.ICEServers != 0 {
		t.Errorf("selected pair %s/%s with %d ICE servers; want host without relays", s.LocalCandidate, s.RemoteCandidate, s.ICEServers)
	}
	if s.Setup <= 0 {
		t.Errorf("setup time not measured")
	}
}

// Relay-only ICE over each transport a relay offers: media goes through
// the TURN relay, with credentials from the signalling service.
func TestRelayOnlyCall(t *testing.T) {
	secret := []byte("test-shared-secret")
	relay, err := turnrelay.Start(turnrelay.Config{ListenIP: net.IPv4(127, 0, 0, 1), UDPPort: -1, TCPPort: -1, TLSPort: -1, TLS: relayTLS,
		RelayPortMin: 43000, RelayPortMax: 43099, Secret: secret})
	if err != nil {
		t.Fatal(err)
	}
	defer relay.Close()
	all := turnrelay.URLs("127.0.0.1", relay.Meta("", ""))
	if len(all) != 3 {
		t.Fatalf("relay URLs %v; want UDP, TCP and TLS", all)
	}
	for i, url := range all {
		t.Run(url[:5]+"-"+url[len(url)-3:], func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			cc := startSignal(t, staticRelays{url}, secret)
			call := fmt.Sprintf("call-relay-%d", i)
			clin := join(t, ctx, cc, peer.Options{Role: signal.RoleClinician, Call: call, Kind: "video-visit", RelayOnly: true})
			pat := join(t, ctx, cc, peer.Options{Role: signal.RolePatient, Call: call, Kind: "video-visit", SendVideo: true, RelayOnly: true})
			waitConnected(t, ctx, clin)
			s := waitFor(t, ctx, "video RTP through the relay", clin, func(s peer.Stats) bool { return s.VideoPackets >= 30 })
			if s.LocalCandidate != "relay" || s.ICEServers != 1 {
				t.Errorf("selected pair %s/%s with %d ICE servers; want relay", s.LocalCandidate, s.RemoteCandidate, s.ICEServers)
			}
			if relay.Allocations() == 0 {
				t.Error("the relay holds no allocation")
			}
			pat.Close()
			clin.Close()
		})
	}
}

// The relay admits only credentials made from its secret: an allocation
// with credentials from another secret is refused, one from the shared
// secret (what signalling hands out) succeeds.
func TestRelayChecksCredentials(t *testing.T) {
	secret := "the relay's secret"
	relay, err := turnrelay.Start(turnrelay.Config{ListenIP: net.IPv4(127, 0, 0, 1), UDPPort: -1, RelayPortMin: 43100, RelayPortMax: 43199, Secret: []byte(secret)})
	if err != nil {
		t.Fatal(err)
	}
	defer relay.Close()
	allocate := func(secret string) error {
		user, pass, err := turn.GenerateLongTermCredentials(secret, time.Minute)
		if err != nil {
			return err
		}
		conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			return err
		}
		defer conn.Close()
		addr := relay.UDPAddr.String()
		client, err := turn.NewClient(&turn.ClientConfig{STUNServerAddr: addr, TURNServerAddr: addr, Conn: conn,
			Username: user, Password: pass, Realm: "medmesh"})
		if err != nil {
			return err
		}
		defer client.Close()
		if err := client.Listen(); err != nil {
			return err
		}
		relayed, err := client.Allocate()
		if err != nil {
			return err
		}
		port := relayed.LocalAddr().(*net.UDPAddr).Port
		relayed.Close()
		if port < 43100 || port > 43199 {
			return fmt.Errorf("relayed port %d outside 43100-43199", port)
		}
		return nil
	}
	if err := allocate("another secret"); err == nil {
		t.Error("allocated with credentials from another secret")
	}
	if err := allocate(secret); err != nil {
		t.Errorf("allocation with the shared secret: %v", err)
	}
}
