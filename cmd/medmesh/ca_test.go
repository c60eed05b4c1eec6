package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeRoot writes a self-signed hospital root and its key (0600).
func writeRoot(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "hospital root"},
		URIs:      []*url.URL{{Scheme: "spiffe", Host: "medmesh.local"}},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(365 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	certFile, keyFile = filepath.Join(dir, "root.pem"), filepath.Join(dir, "root-key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

func TestCAIntermediateCommand(t *testing.T) {
	dir := t.TempDir()
	rootCert, rootKey := writeRoot(t, dir)
	out := filepath.Join(dir, "site-a")
	args := []string{"ca", "intermediate", "--site", "site-a", "--trust-domain", "medmesh.local",
		"--root-cert", rootCert, "--root-key", rootKey, "--ttl", "720h", "--out-dir", out}
	code, stdout, stderr := runCmd(args...)
	if code != 0 {
		t.Fatalf("code %d: %s", code, stderr)
	}
	for name, mode := range map[string]os.FileMode{"intermediate.pem": 0o644, "intermediate-key.pem": 0o600, "bundle.pem": 0o644} {
		info, err := os.Stat(filepath.Join(out, name))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if info.Mode().Perm() != mode {
			t.Errorf("%s: mode %04o, want %04o", name, info.Mode().Perm(), mode)
		}
	}
	if !strings.Contains(stdout, "--site site-a") || !strings.Contains(stdout, "--ca-cert "+filepath.Join(out, "intermediate.pem")) {
		t.Errorf("stdout does not say how to run the site's control plane:\n%s", stdout)
	}
	b, _ := os.ReadFile(filepath.Join(out, "intermediate.pem"))
	block, _ := pem.Decode(b)
	inter, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if len(inter.Subject.OrganizationalUnit) != 1 || inter.Subject.OrganizationalUnit[0] != "medmesh-site:site-a" {
		t.Errorf("subject %s lacks the site marker", inter.Subject)
	}
	if life := inter.NotAfter.Sub(time.Now()); life < 719*time.Hour || life > 720*time.Hour {
		t.Errorf("intermediate lives %s, want 720h", life)
	}

	// Running it again must not replace the site's live key.
	key1, _ := os.ReadFile(filepath.Join(out, "intermediate-key.pem"))
	code, _, stderr = runCmd(args...)
	if code != 2 || !strings.Contains(stderr, "--out-dir") || !strings.Contains(stderr, "--force") {
		t.Fatalf("second run: code %d, %q", code, stderr)
	}
	if key2, _ := os.ReadFile(filepath.Join(out, "intermediate-key.pem")); string(key1) != string(key2) {
		t.Fatal("a refused run replaced the key")
	}
	if code, _, stderr := runCmd(append(args, "--force")...); code != 0 {
		t.Fatalf("--force: code %d, %s", code, stderr)
	}

	// Another site's control plane refuses site-a's intermediate before
	// it listens anywhere.
	code, _, stderr = runCmd("controlplane", "--site", "site-b", "--consul=", "--catalog", rootCert,
		"--ca-cert", filepath.Join(out, "intermediate.pem"), "--ca-key", filepath.Join(out, "intermediate-key.pem"),
		"--ca-bundle", filepath.Join(out, "bundle.pem"))
	if code != 2 || !strings.Contains(stderr, `"site-a"`) || !strings.Contains(stderr, `"site-b"`) {
		t.Fatalf("site-b with site-a's intermediate: code %d, %q", code, stderr)
	}
}

func TestCAIntermediateRefusals(t *testing.T) {
	dir := t.TempDir()
	rootCert, rootKey := writeRoot(t, dir)
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"--site", "Site_A", "--root-cert", rootCert, "--root-key", rootKey, "--out-dir", filepath.Join(dir, "a")},
			[]string{"--site:", "Site_A"}},
		{[]string{"--site", "site-a", "--root-cert", rootCert, "--root-key", rootKey, "--ttl", "1h", "--out-dir", filepath.Join(dir, "b")},
			[]string{"--ttl:", "shorter"}},
		{[]string{"--site", "site-a", "--trust-domain", "other.example", "--root-cert", rootCert, "--root-key", rootKey,
			"--out-dir", filepath.Join(dir, "c")}, []string{"--trust-domain:", "other.example", "medmesh.local"}},
		{[]string{"--site", "site-a", "--root-cert", rootCert, "--root-key", rootKey, "--ttl", "9000h", "--out-dir", filepath.Join(dir, "d")},
			[]string{"--ttl:", "after"}},
		{[]string{"--site", "site-a", "--root-key", rootKey, "--out-dir", filepath.Join(dir, "e")}, []string{"--root-cert:"}},
	} {
		code, _, stderr := runCmd(append([]string{"ca", "intermediate"}, tc.args...)...)
		if code != 2 {
			t.Errorf("%v: code %d, want 2 (%s)", tc.args, code, stderr)
		}
		for _, w := range tc.want {
			if !strings.Contains(stderr, w) {
				t.Errorf("%v: stderr %q does not mention %q", tc.args, stderr, w)
			}
		}
	}
	if code, _, _ := runCmd("ca"); code != 2 {
		t.Errorf("ca without a subcommand: code %d", code)
	}
	if code, _, stderr := runCmd("ca", "root"); code != 2 || !strings.Contains(stderr, "intermediate") {
		t.Errorf("ca root: code %d, %q", code, stderr)
	}
}

// --site is checked before anything starts.
func TestControlPlaneRefusesABadSite(t *testing.T) {
	code, _, stderr := runCmd("controlplane", "--site", "Bad_Site", "--consul=", "--catalog", "x.yaml", "--mtls=false")
	if code != 2 || !strings.Contains(stderr, "--site") || !strings.Contains(stderr, "Bad_Site") {
		t.Fatalf("code %d, %q", code, stderr)
	}
}
