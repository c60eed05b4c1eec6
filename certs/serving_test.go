package certs

import (
	"crypto/x509"
	"net"
	"testing"
	"time"
)

func TestServingCertVerifiesForItsNamesOnly(t *testing.T) {
	c := &clock{time.Now()}
	ca := newStateCA(t, t.TempDir(), c)
	cert, err := ca.ServingCert([]string{"medmesh-webhook.medmesh-system.svc", "127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca.BundlePEM()) {
		t.Fatal("BundlePEM holds no certificate")
	}
	leaf := cert.Leaf
	for _, name := range []string{"medmesh-webhook.medmesh-system.svc", "127.0.0.1"} {
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			t.Errorf("verify for %s: %v", name, err)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "evil.example", Roots: pool}); err == nil {
		t.Error("certificate verified for a name it was not issued for")
	}
	if len(leaf.URIs) != 0 {
		t.Errorf("serving certificate carries URI SANs %v; it must not pass for an SVID", leaf.URIs)
	}
	if !leaf.IPAddresses[0].Equal(net.ParseIP("127.0.0.1")) || len(leaf.DNSNames) != 1 {
		t.Errorf("SANs = DNS %v IP %v", leaf.DNSNames, leaf.IPAddresses)
	}
	// X.509 times have whole seconds.
	if got := leaf.NotAfter.Sub(c.t); got <= time.Hour-time.Second || got > time.Hour {
		t.Errorf("lifetime from now = %v, want 1h", got)
	}
	if leaf.IsCA {
		t.Error("serving certificate is a CA")
	}
}

func TestServingCertRefusesNoNames(t *testing.T) {
	ca := newStateCA(t, t.TempDir(), &clock{time.Now()})
	if _, err := ca.ServingCert(nil, 0); err == nil {
		t.Error("no names: want an error")
	}
	if _, err := ca.ServingCert([]string{"a.svc", ""}, 0); err == nil {
		t.Error("an empty name: want an error")
	}
}
