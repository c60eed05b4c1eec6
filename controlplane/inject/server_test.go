package inject

import (
	"crypto/tls"
	"errors"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"medmesh/certs"
)

// flakyCerts is a CertSource that can be made to fail.
type flakyCerts struct {
	ca    *certs.CA
	fail  atomic.Bool
	calls atomic.Int32
}

func (f *flakyCerts) ServingCert(hosts []string, ttl time.Duration) (*tls.Certificate, error) {
	f.calls.Add(1)
	if f.fail.Load() {
		return nil, errors.New("CA unavailable")
	}
	return f.ca.ServingCert(hosts, ttl)
}

func (f *flakyCerts) BundlePEM() []byte { return f.ca.BundlePEM() }

// TestServingCertRenewal: the serving certificate is reused while young,
// re-signed past half its life, and kept (while valid) if re-signing fails.
func TestServingCertRenewal(t *testing.T) {
	ca, err := certs.New(certs.Options{TrustDomain: "medmesh.local", StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	serial := func(s *Server) string {
		c, err := s.certificate()
		if err != nil {
			t.Fatal(err)
		}
		return c.Leaf.SerialNumber.String()
	}
	young := &flakyCerts{ca: ca}
	s, err := Listen(ServerOptions{Listen: "127.0.0.1:0", Certs: young, Hosts: []string{"127.0.0.1"}, CertTTL: time.Hour, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.l.Close()
	if a, b := serial(s), serial(s); a != b || young.calls.Load() != 1 {
		t.Errorf("a fresh certificate was re-signed (%s, %s; %d signatures)", a, b, young.calls.Load())
	}

	// A 30 s certificate is backdated a minute, so it is always past
	// half its life: every handshake asks for a new one.
	old := &flakyCerts{ca: ca}
	s2, err := Listen(ServerOptions{Listen: "127.0.0.1:0", Certs: old, Hosts: []string{"127.0.0.1"}, CertTTL: 30 * time.Second, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.l.Close()
	first := serial(s2)
	if second := serial(s2); second == first {
		t.Error("a certificate past half its life was not renewed")
	}
	old.fail.Store(true)
	kept := serial(s2)
	if third := serial(s2); third != kept {
		t.Errorf("renewal failed and the certificate changed (%s -> %s)", kept, third)
	}

	if _, err := Listen(ServerOptions{Listen: "127.0.0.1:0", Certs: old, Hosts: []string{"127.0.0.1"}}); err == nil {
		t.Error("Listen with a failing CA: want an error at start")
	}
	if _, err := Listen(ServerOptions{Listen: "127.0.0.1:0", Certs: young}); err == nil {
		t.Error("Listen without hosts: want an error")
	}
}
