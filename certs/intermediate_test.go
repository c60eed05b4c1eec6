package certs

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// caSpec describes a test CA certificate; zero values are a sound
// hospital root (ECDSA P-256, a year, spiffe://medmesh.local).
type caSpec struct {
	key       crypto.Signer // default: a new P-256 key
	uri       string        // "" = spiffe://medmesh.local; "-" = none
	notAfter  time.Time     // default: now + a year
	notCA     bool
	pathLen0  bool
	parent    *x509.Certificate // nil: self-signed
	parentKey crypto.Signer
	cn        string
}

func makeCert(t *testing.T, now time.Time, s caSpec) (crypto.Signer, *x509.Certificate) {
	t.Helper()
	if s.key == nil {
		s.key, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	if s.notAfter.IsZero() {
		s.notAfter = now.Add(365 * 24 * time.Hour)
	}
	if s.cn == "" {
		s.cn = "hospital root"
	}
	serial, _ := serialNumber()
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{Organization: []string{"St Example Hospital"}, CommonName: s.cn},
		NotBefore: now.Add(-time.Hour), NotAfter: s.notAfter,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, BasicConstraintsValid: true, IsCA: !s.notCA,
		MaxPathLen: -1,
	}
	if s.notCA {
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	}
	if s.pathLen0 {
		tmpl.MaxPathLen, tmpl.MaxPathLenZero = 0, true
	}
	switch s.uri {
	case "":
		tmpl.URIs = []*url.URL{{Scheme: "spiffe", Host: "medmesh.local"}}
	case "-":
	default:
		u, _ := url.Parse(s.uri)
		tmpl.URIs = []*url.URL{u}
	}
	parent, signer := tmpl, s.key
	if s.parent != nil {
		parent, signer = s.parent, s.parentKey
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, s.key.Public(), signer)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return s.key, c
}

// writeFiles writes certificates (one file, in order) and a key (0600).
func writeFiles(t *testing.T, dir string, key crypto.Signer, chain ...*x509.Certificate) (certFile, keyFile string) {
	t.Helper()
	certFile, keyFile = filepath.Join(dir, "root.pem"), filepath.Join(dir, "root-key.pem")
	if err := os.WriteFile(certFile, PEMCerts(chain), 0o644); err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

func siteOpts(certFile, keyFile, out string, now time.Time) IntermediateOptions {
	return IntermediateOptions{Site: "site-a", TrustDomain: "medmesh.local", RootCertFile: certFile, RootKeyFile: keyFile,
		TTL: 30 * 24 * time.Hour, OutDir: out, Now: func() time.Time { return now }}
}

// The whole path of an edge site's identity: the hospital makes the
// site's intermediate, the site's CA signs SVIDs with the site in the ID,
// and a workload anywhere verifies them against the hospital root alone.
func TestSiteIntermediateEndToEnd(t *testing.T) {
	now := time.Now()
	dir := t.TempDir()
	rootKey, root := makeCert(t, now, caSpec{})
	certFile, keyFile := writeFiles(t, dir, rootKey, root)
	out := filepath.Join(dir, "site-a")
	inter, err := NewIntermediate(siteOpts(certFile, keyFile, out, now))
	if err != nil {
		t.Fatal(err)
	}

	for f, mode := range map[string]os.FileMode{inter.CertFile: 0o644, inter.KeyFile: 0o600, inter.BundleFile: 0o644} {
		info, err := os.Stat(f)
		if err != nil || info.Mode().Perm() != mode {
			t.Errorf("%s: %v, mode %v, want %04o", f, err, info.Mode().Perm(), mode)
		}
	}
	c := inter.Cert
	k, ok := c.PublicKey.(*ecdsa.PublicKey)
	switch {
	case !ok || k.Curve != elliptic.P256():
		t.Errorf("key %T, want ECDSA P-256", c.PublicKey)
	case !c.IsCA || c.MaxPathLen != 0 || !c.MaxPathLenZero:
		t.Errorf("IsCA %v, MaxPathLen %d (zero %v); want a CA with path length 0", c.IsCA, c.MaxPathLen, c.MaxPathLenZero)
	case c.KeyUsage != x509.KeyUsageCertSign|x509.KeyUsageCRLSign:
		t.Errorf("key usage %v", c.KeyUsage)
	case len(c.URIs) != 1 || c.URIs[0].String() != "spiffe://medmesh.local":
		t.Errorf("URI SANs %v, want only spiffe://medmesh.local (SPIFFE: a signing certificate's ID has no path)", c.URIs)
	case !c.NotAfter.Equal(now.Add(30 * 24 * time.Hour).Truncate(time.Second)):
		t.Errorf("not after %s, want now + 720h", c.NotAfter)
	}
	if site, err := SiteOf(c); site != "site-a" || err != nil {
		t.Errorf("site marker: %q, %v (subject %s)", site, err, c.Subject)
	}
	if err := verifyChain(c, nil, root, now); err != nil {
		t.Fatalf("the intermediate does not verify against the root: %v", err)
	}
	if chain, _ := readCerts(inter.CertFile); len(chain) != 1 || !chain[0].Equal(c) {
		t.Errorf("%s holds %d certificates, want the intermediate only", inter.CertFile, len(chain))
	}
	if b, _ := readCerts(inter.BundleFile); len(b) != 1 || !b[0].Equal(root) {
		t.Errorf("%s is not the root", inter.BundleFile)
	}

	ca, err := New(Options{TrustDomain: "medmesh.local", Site: "site-a", CertFile: inter.CertFile, KeyFile: inter.KeyFile,
		BundleFile: inter.BundleFile})
	if err != nil {
		t.Fatal(err)
	}
	if !ca.SigningNotAfter().Equal(c.NotAfter) || ca.Site() != "site-a" {
		t.Errorf("SigningNotAfter %s, Site %q", ca.SigningNotAfter(), ca.Site())
	}
	id := emrID(t, ca)
	if id.String() != "spiffe://medmesh.local/ns/default/svc/emr/site/site-a" {
		t.Fatalf("id = %s", id)
	}
	svid, err := ca.NewSVID(id)
	if err != nil {
		t.Fatal(err)
	}
	// A workload elsewhere holds only the hospital root, as bundle.pem.
	bundle, err := x509bundle.Load(spiffeid.RequireTrustDomainFromString("medmesh.local"), inter.BundleFile)
	if err != nil {
		t.Fatal(err)
	}
	got, _, err := x509svid.Verify(svid.Certificates, bundle)
	if err != nil || got != id {
		t.Fatalf("verify against bundle.pem: %s, %v", got, err)
	}

	// Defence in depth: the site's CA never signs another site's IDs.
	for _, other := range []string{
		"spiffe://medmesh.local/ns/default/svc/emr/site/site-b",
		"spiffe://medmesh.local/ns/default/svc/emr",
		"spiffe://medmesh.local/anything",
	} {
		_, err := ca.SignSVID(spiffeid.RequireFromString(other), svid.PrivateKey.Public())
		if err == nil || !strings.Contains(err.Error(), `"site-a"`) {
			t.Errorf("signed %s: %v", other, err)
		}
		if strings.HasSuffix(other, "site-b") && (err == nil || !strings.Contains(err.Error(), `"site-b"`)) {
			t.Errorf("refusal does not name the other site: %v", err)
		}
	}

	// The intermediate belongs to site-a: not to site-b, not to no site.
	for _, site := range []string{"site-b", ""} {
		_, err := New(Options{TrustDomain: "medmesh.local", Site: site, CertFile: inter.CertFile, KeyFile: inter.KeyFile,
			BundleFile: inter.BundleFile})
		if err == nil || !strings.Contains(err.Error(), `"site-a"`) || !strings.Contains(err.Error(), inter.CertFile) ||
			(site != "" && !strings.Contains(err.Error(), `"site-b"`)) {
			t.Errorf("site %q with site-a's intermediate: %v", site, err)
		}
	}
}

// A hospital's issuing CA below an offline root: the chain it needs is in
// intermediate.pem, the root alone in bundle.pem. An RSA hospital PKI is
// fine as long as its keys are strong.
func TestSiteIntermediateBelowIssuingCA(t *testing.T) {
	now := time.Now()
	dir := t.TempDir()
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rootKey, root := makeCert(t, now, caSpec{key: rsaKey, uri: "-"})
	issuingKey, issuing := makeCert(t, now, caSpec{parent: root, parentKey: rootKey, cn: "hospital issuing CA",
		notAfter: now.Add(200 * 24 * time.Hour)})
	certFile, keyFile := writeFiles(t, dir, issuingKey, issuing, root)
	inter, err := NewIntermediate(siteOpts(certFile, keyFile, filepath.Join(dir, "out"), now))
	if err != nil {
		t.Fatal(err)
	}
	chain, _ := readCerts(inter.CertFile)
	if len(chain) != 2 || !chain[1].Equal(issuing) {
		t.Fatalf("%s holds %d certificates, want the intermediate then the issuing CA", inter.CertFile, len(chain))
	}
	ca, err := New(Options{TrustDomain: "medmesh.local", Site: "site-a", CertFile: inter.CertFile, KeyFile: inter.KeyFile,
		BundleFile: inter.BundleFile})
	if err != nil {
		t.Fatal(err)
	}
	svid, err := ca.NewSVID(emrID(t, ca))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := x509svid.Verify(svid.Certificates, ca.Bundle()); err != nil || len(svid.Certificates) != 3 {
		t.Fatalf("verify (%d certificates): %v", len(svid.Certificates), err)
	}
}

// A hospital PKI intermediate without a site marker serves any site; a
// self-signed root in the state dir carries the site into IDs too.
func TestCAsWithoutMarkerTakeAnySite(t *testing.T) {
	now := time.Now()
	dir := t.TempDir()
	rootKey, root := makeCert(t, now, caSpec{})
	interKey, inter := makeCert(t, now, caSpec{parent: root, parentKey: rootKey, cn: "hospital PKI intermediate"})
	certFile, keyFile := writeFiles(t, dir, interKey, inter)
	bundleFile := filepath.Join(dir, "bundle.pem")
	os.WriteFile(bundleFile, pemCert(root), 0o644)
	for _, site := range []string{"site-a", "site-b", ""} {
		ca, err := New(Options{TrustDomain: "medmesh.local", Site: site, CertFile: certFile, KeyFile: keyFile, BundleFile: bundleFile})
		if err != nil {
			t.Fatalf("site %q: %v", site, err)
		}
		want := "spiffe://medmesh.local/ns/default/svc/emr"
		if site != "" {
			want += "/site/" + site
		}
		if id := emrID(t, ca); id.String() != want {
			t.Errorf("site %q: id %s", site, id)
		}
	}

	ca, err := New(Options{TrustDomain: "medmesh.local", StateDir: t.TempDir(), Site: "clinic-7"})
	if err != nil {
		t.Fatal(err)
	}
	id := emrID(t, ca)
	svid, err := ca.NewSVID(id)
	if err != nil {
		t.Fatal(err)
	}
	if got, _, err := x509svid.Verify(svid.Certificates, ca.Bundle()); err != nil || got.String() != "spiffe://medmesh.local/ns/default/svc/emr/site/clinic-7" {
		t.Fatalf("state-dir root with a site: %s, %v", got, err)
	}

	for _, bad := range []string{"Site-A", "site_a", "-a", strings.Repeat("s", 64)} {
		if _, err := New(Options{TrustDomain: "medmesh.local", StateDir: t.TempDir(), Site: bad}); err == nil {
			t.Errorf("site %q accepted", bad)
		}
	}
}

func TestSiteIntermediateRefusals(t *testing.T) {
	now := time.Now()
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	rootEnd := now.Add(100 * 24 * time.Hour)
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, dir string) IntermediateOptions
		input string
		parts []string
	}{
		{"root is not a CA", func(t *testing.T, dir string) IntermediateOptions {
			k, c := makeCert(t, now, caSpec{notCA: true})
			cf, kf := writeFiles(t, dir, k, c)
			return siteOpts(cf, kf, filepath.Join(dir, "out"), now)
		}, "root-cert", []string{"root.pem", "not a CA"}},
		{"key does not match", func(t *testing.T, dir string) IntermediateOptions {
			_, c := makeCert(t, now, caSpec{})
			other, _ := makeCert(t, now, caSpec{})
			cf, kf := writeFiles(t, dir, other, c)
			return siteOpts(cf, kf, filepath.Join(dir, "out"), now)
		}, "root-key", []string{"root-key.pem", "do not match"}},
		{"another trust domain", func(t *testing.T, dir string) IntermediateOptions {
			k, c := makeCert(t, now, caSpec{uri: "spiffe://other.example"})
			cf, kf := writeFiles(t, dir, k, c)
			return siteOpts(cf, kf, filepath.Join(dir, "out"), now)
		}, "trust-domain", []string{"medmesh.local", "other.example"}},
		{"weak RSA root", func(t *testing.T, dir string) IntermediateOptions {
			k, c := makeCert(t, now, caSpec{key: rsa1024})
			cf, kf := writeFiles(t, dir, k, c)
			return siteOpts(cf, kf, filepath.Join(dir, "out"), now)
		}, "root-key", []string{"RSA 1024", "2048"}},
		{"weak ECDSA issuing CA", func(t *testing.T, dir string) IntermediateOptions {
			// Go cannot sign with P-224, so the weak key is an issuing
			// CA's, signed by a sound root.
			rk, r := makeCert(t, now, caSpec{})
			k, c := makeCert(t, now, caSpec{key: p224, parent: r, parentKey: rk, cn: "weak issuing CA"})
			cf, kf := writeFiles(t, dir, k, c, r)
			return siteOpts(cf, kf, filepath.Join(dir, "out"), now)
		}, "root-key", []string{"P-224", "P-256"}},
		{"TTL too short", func(t *testing.T, dir string) IntermediateOptions {
			o := siteOpts("unused", "unused", filepath.Join(dir, "out"), now)
			o.TTL = 90 * time.Minute
			return o
		}, "ttl", []string{"1h30m0s", "2h0m0s"}},
		{"TTL beyond the root", func(t *testing.T, dir string) IntermediateOptions {
			k, c := makeCert(t, now, caSpec{notAfter: rootEnd})
			cf, kf := writeFiles(t, dir, k, c)
			o := siteOpts(cf, kf, filepath.Join(dir, "out"), now)
			o.TTL = 101 * 24 * time.Hour
			return o
		}, "ttl", []string{now.Add(101 * 24 * time.Hour).UTC().Format(time.RFC3339), rootEnd.UTC().Format(time.RFC3339), "hospital root"}},
		{"invalid site", func(t *testing.T, dir string) IntermediateOptions {
			o := siteOpts("unused", "unused", filepath.Join(dir, "out"), now)
			o.Site = "Site_A"
			return o
		}, "site", []string{"Site_A", "DNS label"}},
		{"no site", func(t *testing.T, dir string) IntermediateOptions {
			o := siteOpts("unused", "unused", filepath.Join(dir, "out"), now)
			o.Site = ""
			return o
		}, "site", []string{"empty"}},
		{"out-dir already holds a CA", func(t *testing.T, dir string) IntermediateOptions {
			k, c := makeCert(t, now, caSpec{})
			cf, kf := writeFiles(t, dir, k, c)
			out := filepath.Join(dir, "out")
			os.MkdirAll(out, 0o700)
			os.WriteFile(filepath.Join(out, IntermediateKeyFile), []byte("live key"), 0o600)
			return siteOpts(cf, kf, out, now)
		}, "out-dir", []string{IntermediateKeyFile, "--force"}},
		{"expired root", func(t *testing.T, dir string) IntermediateOptions {
			k, c := makeCert(t, now, caSpec{notAfter: now.Add(-time.Minute)})
			cf, kf := writeFiles(t, dir, k, c)
			return siteOpts(cf, kf, filepath.Join(dir, "out"), now)
		}, "root-cert", []string{"expired"}},
		{"root key readable by others", func(t *testing.T, dir string) IntermediateOptions {
			k, c := makeCert(t, now, caSpec{})
			cf, kf := writeFiles(t, dir, k, c)
			os.Chmod(kf, 0o644)
			return siteOpts(cf, kf, filepath.Join(dir, "out"), now)
		}, "root-key", []string{"readable by group or others"}},
		{"no self-signed root at the end", func(t *testing.T, dir string) IntermediateOptions {
			rk, r := makeCert(t, now, caSpec{})
			k, c := makeCert(t, now, caSpec{parent: r, parentKey: rk, cn: "issuing CA"})
			cf, kf := writeFiles(t, dir, k, c)
			return siteOpts(cf, kf, filepath.Join(dir, "out"), now)
		}, "root-cert", []string{"not a self-signed root", "issuing CA"}},
		{"root may sign only leaves", func(t *testing.T, dir string) IntermediateOptions {
			k, c := makeCert(t, now, caSpec{pathLen0: true})
			cf, kf := writeFiles(t, dir, k, c)
			return siteOpts(cf, kf, filepath.Join(dir, "out"), now)
		}, "root-cert", []string{"path length 0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			o := tc.setup(t, dir)
			_, err := NewIntermediate(o)
			var ie *InputError
			if !errors.As(err, &ie) {
				t.Fatalf("err = %v, want an InputError", err)
			}
			if ie.Input != tc.input {
				t.Errorf("input %q, want %q (%v)", ie.Input, tc.input, err)
			}
			for _, p := range tc.parts {
				if !strings.Contains(err.Error(), p) {
					t.Errorf("error %q does not mention %q", err, p)
				}
			}
			if _, err := os.Stat(filepath.Join(o.OutDir, IntermediateCertFile)); err == nil {
				t.Error("a refused intermediate was written")
			}
		})
	}
}

// --force replaces a site's files; without it they stay as they were.
func TestSiteIntermediateForce(t *testing.T) {
	now := time.Now()
	dir := t.TempDir()
	k, c := makeCert(t, now, caSpec{})
	cf, kf := writeFiles(t, dir, k, c)
	o := siteOpts(cf, kf, filepath.Join(dir, "out"), now)
	first, err := NewIntermediate(o)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewIntermediate(o); err == nil {
		t.Fatal("replaced without force")
	}
	o.Force = true
	second, err := NewIntermediate(o)
	if err != nil {
		t.Fatal(err)
	}
	onDisk, _ := readCert(second.CertFile)
	if first.Cert.Equal(second.Cert) || !onDisk.Equal(second.Cert) {
		t.Fatal("--force did not replace the intermediate")
	}
	if info, _ := os.Stat(second.KeyFile); info.Mode().Perm() != 0o600 {
		t.Fatalf("replaced key mode %04o", info.Mode().Perm())
	}
}
