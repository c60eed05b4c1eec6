package certs

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func newStateCA(t *testing.T, dir string, c *clock) *CA {
	t.Helper()
	ca, err := New(Options{TrustDomain: "medmesh.local", StateDir: dir, Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func emrID(t *testing.T, ca *CA) spiffeid.ID {
	t.Helper()
	id, err := ca.ServiceID("", "emr")
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestSelfSignedRootIsCreatedAndReused(t *testing.T) {
	dir := t.TempDir()
	c := &clock{time.Now()}
	ca := newStateCA(t, dir, c)
	info, err := os.Stat(filepath.Join(dir, "ca", "root-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if perm := info.Mode().Perm(); perm != 0o600 {
		t.Fatalf("root key mode = %04o, want 0600", perm)
	}
	again := newStateCA(t, dir, c)
	if !again.Bundle().HasX509Authority(ca.Bundle().X509Authorities()[0]) {
		t.Fatal("a second start created a new root instead of loading the saved one")
	}
}

// Every SVID: one URI SAN (the SPIFFE ID, spiffe://<td>/ns/<ns>/svc/<svc>),
// valid from a minute in the past for the TTL, not a CA, verified by
// go-spiffe against the bundle.
func TestSVIDsVerifyAgainstTheBundle(t *testing.T) {
	c := &clock{time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)}
	ca := newStateCA(t, t.TempDir(), c)
	id := emrID(t, ca)
	if id.String() != "spiffe://medmesh.local/ns/default/svc/emr" {
		t.Fatalf("id = %s", id)
	}
	svid, err := ca.NewSVID(id)
	if err != nil {
		t.Fatal(err)
	}
	leaf := svid.Certificates[0]
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != id.String() || len(leaf.DNSNames)+len(leaf.EmailAddresses)+len(leaf.IPAddresses) != 0 {
		t.Fatalf("SANs: URIs %v DNS %v", leaf.URIs, leaf.DNSNames)
	}
	if leaf.IsCA {
		t.Fatal("an SVID must not be a CA")
	}
	if !leaf.NotBefore.Equal(c.t.Add(-time.Minute)) || !leaf.NotAfter.Equal(c.t.Add(time.Hour)) {
		t.Fatalf("validity %s .. %s", leaf.NotBefore, leaf.NotAfter)
	}
	if _, ok := svid.PrivateKey.(*ecdsa.PrivateKey); !ok || svid.PrivateKey.(*ecdsa.PrivateKey).Curve != elliptic.P256() {
		t.Fatal("SVID key is not ECDSA P-256")
	}
	got, _, err := x509svid.Verify(svid.Certificates, ca.Bundle(), x509svid.WithTime(c.t))
	if err != nil || got != id {
		t.Fatalf("verify: %s, %v", got, err)
	}
	// A workload's clock a little behind still accepts it.
	if _, _, err := x509svid.Verify(svid.Certificates, ca.Bundle(), x509svid.WithTime(c.t.Add(-30*time.Second))); err != nil {
		t.Fatalf("30s of clock skew: %v", err)
	}
	other, _ := spiffeid.FromString("spiffe://other.example/ns/default/svc/emr")
	if _, err := ca.SignSVID(other, svid.PrivateKey.Public()); err == nil {
		t.Fatal("signed an SVID for another trust domain")
	}
}

func TestKeyFilePermissionsAreEnforced(t *testing.T) {
	dir := t.TempDir()
	newStateCA(t, dir, &clock{time.Now()})
	key := filepath.Join(dir, "ca", "root-key.pem")
	if err := os.Chmod(key, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := New(Options{TrustDomain: "medmesh.local", StateDir: dir})
	if err == nil || !strings.Contains(err.Error(), key) || !strings.Contains(err.Error(), "readable by group or others") {
		t.Fatalf("err = %v, want a refusal naming %s", err, key)
	}
}

func TestBadCAFilesAreNamed(t *testing.T) {
	dir := t.TempDir()
	newStateCA(t, dir, &clock{time.Now()})
	otherDir := t.TempDir()
	newStateCA(t, otherDir, &clock{time.Now()})
	cert := filepath.Join(dir, "ca", "root.pem")
	otherKey := filepath.Join(otherDir, "ca", "root-key.pem")
	garbage := filepath.Join(t.TempDir(), "garbage.pem")
	os.WriteFile(garbage, []byte("not a key"), 0o600)

	for _, tc := range []struct {
		name      string
		opts      Options
		wantParts []string
	}{
		{"mismatched key", Options{CertFile: cert, KeyFile: otherKey}, []string{cert, otherKey, "do not match"}},
		{"unreadable key", Options{CertFile: cert, KeyFile: "/does/not/exist.pem"}, []string{"/does/not/exist.pem"}},
		{"garbage key", Options{CertFile: cert, KeyFile: garbage}, []string{garbage, "no PEM"}},
		{"garbage cert", Options{CertFile: garbage, KeyFile: otherKey}, []string{garbage, "no PEM certificate"}},
		{"only a cert", Options{CertFile: cert}, []string{"both a certificate file and a key file"}},
		{"nothing", Options{}, []string{"no CA"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.TrustDomain = "medmesh.local"
			_, err := New(tc.opts)
			if err == nil {
				t.Fatal("accepted")
			}
			for _, p := range tc.wantParts {
				if !strings.Contains(err.Error(), p) {
					t.Errorf("error %q does not mention %q", err, p)
				}
			}
		})
	}
}

// An operator's intermediate chains SVIDs to the hospital root.
func TestOperatorIntermediate(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	rootKey, root := makeCA(t, nil, nil, "hospital root", now)
	interKey, inter := makeCA(t, rootKey, root, "medmesh intermediate", now)
	write := func(name string, b []byte, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	der, _ := x509.MarshalPKCS8PrivateKey(interKey)
	certFile := write("inter.pem", pemCert(inter), 0o644)
	keyFile := write("inter-key.pem", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
	bundleFile := write("root.pem", pemCert(root), 0o644)

	ca, err := New(Options{TrustDomain: "medmesh.local", CertFile: certFile, KeyFile: keyFile, BundleFile: bundleFile})
	if err != nil {
		t.Fatal(err)
	}
	svid, err := ca.NewSVID(emrID(t, ca))
	if err != nil {
		t.Fatal(err)
	}
	if len(svid.Certificates) != 2 {
		t.Fatalf("chain has %d certificates, want leaf + intermediate", len(svid.Certificates))
	}
	if _, _, err := x509svid.Verify(svid.Certificates, ca.Bundle()); err != nil {
		t.Fatalf("SVID does not verify against the hospital root: %v", err)
	}
	if err := ca.RotateRoot(time.Hour); err == nil {
		t.Fatal("rotated an operator-supplied CA")
	}

	if _, err := New(Options{TrustDomain: "medmesh.local", CertFile: certFile, KeyFile: keyFile}); err == nil ||
		!strings.Contains(err.Error(), "intermediate") {
		t.Fatalf("intermediate without a bundle: %v", err)
	}
	_, strayRoot := makeCA(t, nil, nil, "another root", now)
	stray := write("stray.pem", pemCert(strayRoot), 0o644)
	if _, err := New(Options{TrustDomain: "medmesh.local", CertFile: certFile, KeyFile: keyFile, BundleFile: stray}); err == nil ||
		!strings.Contains(err.Error(), "does not chain") {
		t.Fatalf("wrong bundle: %v", err)
	}
}

// During the overlap both roots are trusted; after it only the new one;
// a restart during the overlap keeps trusting the old root.
func TestRootRotationOverlap(t *testing.T) {
	dir := t.TempDir()
	c := &clock{time.Now()}
	ca := newStateCA(t, dir, c)
	id := emrID(t, ca)
	old, _ := ca.NewSVID(id)
	if err := ca.RotateRoot(2 * time.Hour); err != nil {
		t.Fatal(err)
	}
	fresh, _ := ca.NewSVID(id)
	if fresh.Certificates[0].Issuer.String() == old.Certificates[0].Issuer.String() &&
		fresh.Certificates[0].AuthorityKeyId != nil && bytes.Equal(fresh.Certificates[0].AuthorityKeyId, old.Certificates[0].AuthorityKeyId) {
		t.Fatal("new SVIDs are still signed by the old root")
	}
	for _, s := range []*x509svid.SVID{old, fresh} {
		if _, _, err := x509svid.Verify(s.Certificates, ca.Bundle(), x509svid.WithTime(c.t)); err != nil {
			t.Fatalf("during the overlap: %v", err)
		}
	}
	restarted := newStateCA(t, dir, c)
	if _, _, err := x509svid.Verify(old.Certificates, restarted.Bundle(), x509svid.WithTime(c.t)); err != nil {
		t.Fatalf("after a restart during the overlap, the old root is no longer trusted: %v", err)
	}
	c.t = c.t.Add(3 * time.Hour)
	if _, _, err := x509svid.Verify(old.Certificates, ca.Bundle(), x509svid.WithTime(c.t.Add(-150*time.Minute))); err == nil {
		t.Fatal("old root still trusted after the overlap")
	}
}

// The CA key never appears when the CA is printed or logged.
func TestCAKeyIsNeverLogged(t *testing.T) {
	dir := t.TempDir()
	ca := newStateCA(t, dir, &clock{time.Now()})
	keyPEM, _ := os.ReadFile(filepath.Join(dir, "ca", "root-key.pem"))
	block, _ := pem.Decode(keyPEM)
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	log.Info("ca", "ca", ca)
	log.Info("ca", "ca", fmt.Sprintf("%+v %#v", ca, ca))
	out := buf.String()
	if strings.Contains(out, "PRIVATE KEY") || bytes.Contains(buf.Bytes(), block.Bytes) {
		t.Fatal("CA key material in the log")
	}
	k := ca.signer.(*ecdsa.PrivateKey)
	if strings.Contains(out, k.D.String()) {
		t.Fatal("CA private scalar in the log")
	}
}

func makeCA(t *testing.T, parentKey *ecdsa.PrivateKey, parent *x509.Certificate, cn string, now time.Time) (*ecdsa.PrivateKey, *x509.Certificate) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(now.UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, BasicConstraintsValid: true, IsCA: true,
	}
	signer, p := key, tmpl
	if parent != nil {
		signer, p = parentKey, parent
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p, key.Public(), signer)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return key, c
}
