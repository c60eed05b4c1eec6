package identity

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"medmesh/api/wire"
	"medmesh/internal/metricstest"
)

// The SVID gauges follow what is issued and forgotten: the earliest
// expiry is the issued leaf's NotAfter, its lifetime counts from issue.
func TestSVIDMetrics(t *testing.T) {
	m := newTestManager(t, true)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(m.Collector())
	if got := metricstest.Value(t, reg, "medmesh_svids_held", ""); got != 0 {
		t.Fatalf("svids held before any = %v", got)
	}
	if metricstest.Has(t, reg, "medmesh_svid_earliest_expiry_timestamp_seconds") {
		t.Fatal("an earliest expiry without any SVID")
	}
	before := time.Now()
	ident, err := m.Identify(context.Background(), Claim{ID: "emr-1", Service: "emr", Namespace: "default",
		Kind: wire.ProxyEnvoy, Peer: "127.0.0.1:4000"})
	if err != nil || ident == nil {
		t.Fatalf("svid=%v err=%v", ident, err)
	}
	block, _ := pem.Decode(ident.CertChain)
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if got := metricstest.Value(t, reg, "medmesh_svids_held", ""); got != 1 {
		t.Errorf("svids held = %v, want 1", got)
	}
	if got := metricstest.Value(t, reg, "medmesh_svids_issued_total", ""); got != 1 {
		t.Errorf("svids issued = %v, want 1", got)
	}
	if got := metricstest.Value(t, reg, "medmesh_svid_earliest_expiry_timestamp_seconds", ""); got != float64(leaf.NotAfter.Unix()) {
		t.Errorf("earliest expiry = %v, want the leaf's NotAfter %v", got, leaf.NotAfter.Unix())
	}
	life := metricstest.Value(t, reg, "medmesh_svid_earliest_expiry_lifetime_seconds", "")
	if max := leaf.NotAfter.Sub(before).Seconds(); life <= 0 || life > max {
		t.Errorf("lifetime = %vs, want in (0, %v]", life, max)
	}
	m.Forget(map[string]bool{})
	if got := metricstest.Value(t, reg, "medmesh_svids_held", ""); got != 0 {
		t.Errorf("svids held after the proxy left = %v", got)
	}
	if metricstest.Has(t, reg, "medmesh_svid_earliest_expiry_timestamp_seconds") {
		t.Error("an earliest expiry after the proxy left")
	}
	metricstest.Lint(t, reg)
}

// A proxy refused this round holds no SVID, whatever it was issued
// before; proven again, it holds the same one.
func TestSVIDMetricsFollowWhatIsHandedOut(t *testing.T) {
	m := newTestManager(t, true)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(m.Collector())
	c := Claim{ID: "emr-1", Service: "emr", Namespace: "default", Kind: wire.ProxyEnvoy, Peer: "127.0.0.1:4000"}
	first, err := m.Identify(context.Background(), c)
	if err != nil || first == nil {
		t.Fatalf("svid=%v err=%v", first, err)
	}
	moved := c
	moved.Peer = "10.0.0.9:4000" // not loopback: no proof in dev mode
	if svid, _ := m.Identify(context.Background(), moved); svid != nil {
		t.Fatal("an unproven proxy got an SVID")
	}
	if got := metricstest.Value(t, reg, "medmesh_svids_held", ""); got != 0 {
		t.Errorf("svids held while refused = %v, want 0", got)
	}
	if again, _ := m.Identify(context.Background(), c); again != first {
		t.Fatal("the proven proxy was not handed its SVID again")
	}
	if got := metricstest.Value(t, reg, "medmesh_svids_held", ""); got != 1 {
		t.Errorf("svids held once proven again = %v, want 1", got)
	}
	if got := metricstest.Value(t, reg, "medmesh_svids_issued_total", ""); got != 1 {
		t.Errorf("svids issued = %v, want 1 (the same SVID handed again)", got)
	}
}
