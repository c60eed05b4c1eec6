package identity

import (
	"context"
	"log/slog"
	"testing"

	"medmesh/api/wire"
	"medmesh/certs"
)

func newTestManager(t *testing.T, dev bool) *Manager {
	t.Helper()
	ca, err := certs.New(certs.Options{TrustDomain: "medmesh.local", StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	return New(Options{CA: ca, Dev: dev, Logger: slog.New(slog.DiscardHandler)})
}

// An attested proxy gets its service's SVID, kept until renewal is due; an
// unattested one gets none and a status saying why; a proxy that leaves
// is forgotten whole, so reconnecting it proves itself again.
func TestIdentifyAndForget(t *testing.T) {
	m := newTestManager(t, true)
	ctx := context.Background()
	emr := Claim{ID: "emr-1", Service: "emr", Namespace: "clinical", Kind: wire.ProxyEnvoy, Peer: "127.0.0.1:4000"}
	remote := Claim{ID: "his-1", Service: "his", Namespace: "default", Kind: wire.ProxyEnvoy, Peer: "10.0.0.9:4000"}

	first, err := m.Identify(ctx, emr)
	if err != nil || first == nil {
		t.Fatalf("loopback proxy in dev mode: svid=%v err=%v", first, err)
	}
	if want := wire.ServiceID("medmesh.local", "clinical", "emr"); first.SPIFFEID != want {
		t.Fatalf("SPIFFE ID %q, want %q", first.SPIFFEID, want)
	}
	again, _ := m.Identify(ctx, emr)
	if again != first {
		t.Fatal("an SVID not yet due was issued again")
	}
	if svid, err := m.Identify(ctx, remote); svid != nil || err != nil {
		t.Fatalf("unproven remote proxy: svid=%v err=%v, want none", svid, err)
	}
	st := m.Statuses()
	if st["emr-1"] != first.SPIFFEID || st["his-1"] != "none: no proof of identity" {
		t.Fatalf("statuses %v", st)
	}

	m.Forget(map[string]bool{"his-1": true})
	if _, ok := m.Statuses()["emr-1"]; ok || len(m.proxies) != 1 {
		t.Fatalf("emr-1 not forgotten: statuses %v, %d records", m.Statuses(), len(m.proxies))
	}
	if back, _ := m.Identify(ctx, emr); back == nil || back == first {
		t.Fatal("a reconnecting proxy reused the SVID of its previous connection")
	}
}

// RenewAll makes every SVID due at once (root rotation, key compromise).
func TestRenewAll(t *testing.T) {
	m := newTestManager(t, true)
	ctx := context.Background()
	c := Claim{ID: "emr-1", Service: "emr", Namespace: "default", Kind: wire.ProxyEnvoy, Peer: "[::1]:4000"}
	first, _ := m.Identify(ctx, c)
	m.RenewAll()
	if renewed, _ := m.Identify(ctx, c); renewed == nil || renewed.Fingerprint == first.Fingerprint {
		t.Fatal("RenewAll did not renew the SVID")
	}
}
