package certs

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"medmesh/api/wire"
)

// Files NewIntermediate writes into its output directory; the control
// plane of the site reads them as --ca-cert, --ca-key and --ca-bundle.
const (
	// IntermediateCertFile is the chain each SVID carries: the site's
	// intermediate first, then any issuing CA of the hospital between it
	// and the root. Never the root itself: peers hold it already, from
	// the bundle, and trust only what chains to their own copy.
	IntermediateCertFile = "intermediate.pem"
	// IntermediateKeyFile is the intermediate's private key (mode 0600).
	IntermediateKeyFile = "intermediate-key.pem"
	// IntermediateBundleFile holds the trust anchors: the hospital root.
	IntermediateBundleFile = "bundle.pem"
)

// MinIntermediateTTL is the shortest intermediate NewIntermediate makes:
// SVIDs renew at half-life, and an intermediate shorter than two SVID
// lifetimes would cut short the SVIDs it signs almost from the start.
const MinIntermediateTTL = 2 * DefaultSVIDTTL

// IntermediateOptions say which intermediate CA to make for a site.
type IntermediateOptions struct {
	// Site is the edge site the intermediate is for (wire.ValidateSite).
	Site        string
	TrustDomain string
	// RootCertFile holds the CA that signs the intermediate: the
	// hospital's root, or an issuing CA followed by its chain up to and
	// including the self-signed root. RootKeyFile is the signing CA's
	// private key (mode 0600).
	RootCertFile, RootKeyFile string
	// TTL is the intermediate's lifetime from now: how long the site can
	// issue SVIDs without the hub.
	TTL time.Duration
	// OutDir receives the files; existing ones are replaced only with
	// Force, since replacing a live site's key is not to be done by a typo.
	OutDir string
	Force  bool
	// Now is the clock (tests); time.Now by default.
	Now func() time.Time
}

// Intermediate is what NewIntermediate made and where it wrote it.
type Intermediate struct {
	Cert                          *x509.Certificate
	CertFile, KeyFile, BundleFile string
}

// InputError is an input NewIntermediate refused. Input names it as
// `medmesh ca intermediate` calls it ("site", "trust-domain",
// "root-cert", "root-key", "ttl", "out-dir"), so the command names the
// flag to fix.
type InputError struct {
	Input string
	Err   error
}

func (e *InputError) Error() string { return "certs: " + e.Input + ": " + e.Reason() }

// Reason is what is wrong with the input, without the package prefix.
func (e *InputError) Reason() string { return strings.TrimPrefix(e.Err.Error(), "certs: ") }

func (e *InputError) Unwrap() error { return e.Err }

func refuse(input, format string, args ...any) error {
	return &InputError{Input: input, Err: fmt.Errorf(format, args...)}
}

func refuseErr(input string, err error) error { return &InputError{Input: input, Err: err} }

// NewIntermediate makes a site's intermediate CA, signed by the hospital
// root: the hospital runs it once per site (and again before the
// intermediate expires), and the site's control plane then issues and
// renews SVIDs on its own for as long as the intermediate lives, uplink
// or not. The intermediate is ECDSA P-256, a CA that may sign only leaf
// certificates (path length 0), with the URI SAN spiffe://<td> and the
// site marker in its Subject (SiteMarkerPrefix).
//
// Every refusal is an *InputError naming the input at fault.
func NewIntermediate(o IntermediateOptions) (*Intermediate, error) {
	now := time.Now
	if o.Now != nil {
		now = o.Now
	}
	if err := wire.ValidateSite(o.Site); err != nil {
		return nil, refuseErr("site", err)
	}
	td, err := spiffeid.TrustDomainFromString(o.TrustDomain)
	if err != nil {
		return nil, refuse("trust-domain", "%q: %w", o.TrustDomain, err)
	}
	if o.TTL < MinIntermediateTTL {
		return nil, refuse("ttl", "%s is shorter than %s (twice the default SVID lifetime, %s): "+
			"SVIDs renew at half-life and must fit inside the intermediate", o.TTL, MinIntermediateTTL, DefaultSVIDTTL)
	}
	out, err := outFiles(o.OutDir, o.Force)
	if err != nil {
		return nil, err
	}
	parent, issuers, anchor, err := readIssuer(o, td, now())
	if err != nil {
		return nil, err
	}
	parentKey, err := readPrivateKey(o.RootKeyFile)
	if err != nil {
		return nil, refuseErr("root-key", err)
	}
	if err := matchKey(parent, parentKey, o.RootCertFile, o.RootKeyFile); err != nil {
		return nil, refuseErr("root-key", err)
	}
	if err := strongKey(parent.PublicKey); err != nil {
		return nil, refuse("root-key", "%s: %w", o.RootKeyFile, err)
	}

	start := now()
	notAfter := start.Add(o.TTL)
	// The intermediate may not outlive anything above it: a verifier
	// would reject its SVIDs from the day the first of them expires.
	limit := anchor
	for _, c := range issuers {
		if c.NotAfter.Before(limit.NotAfter) {
			limit = c
		}
	}
	if left := limit.NotAfter.Sub(start); left < MinIntermediateTTL {
		return nil, refuse("root-cert", "%q in %s expires at %s, %s from now: too soon for any intermediate (at least %s); renew the root first",
			limit.Subject.String(), o.RootCertFile, limit.NotAfter.UTC().Format(time.RFC3339), left.Truncate(time.Minute), MinIntermediateTTL)
	}
	if notAfter.After(limit.NotAfter) {
		return nil, refuse("ttl", "%s would make the intermediate valid until %s, after %q in %s expires at %s "+
			"(%s from now): give a TTL of at most %s",
			o.TTL, notAfter.UTC().Format(time.RFC3339), limit.Subject.String(), o.RootCertFile,
			limit.NotAfter.UTC().Format(time.RFC3339), limit.NotAfter.Sub(start).Truncate(time.Minute),
			limit.NotAfter.Sub(start).Truncate(time.Hour))
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("certs: generating the intermediate's key: %w", err)
	}
	serial, err := serialNumber()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject: pkix.Name{Organization: []string{"medmesh"}, OrganizationalUnit: []string{SiteMarkerPrefix + o.Site},
			CommonName: "medmesh site " + o.Site + " intermediate CA " + td.String()},
		URIs:                  []*urlURL{td.ID().URL()},
		NotBefore:             start.Add(-ClockSkew),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		// Path length 0: the site signs workloads, never another CA, so a
		// stolen site key cannot mint a CA for the rest of the network.
		MaxPathLen:     0,
		MaxPathLenZero: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
	if err != nil {
		return nil, fmt.Errorf("certs: signing the intermediate with %s: %w", o.RootCertFile, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	if err := verifyChain(cert, issuers, anchor, now()); err != nil {
		return nil, refuse("root-cert", "the new intermediate does not verify against the root in %s: %w", o.RootCertFile, err)
	}

	if err := os.MkdirAll(o.OutDir, 0o700); err != nil {
		return nil, refuseErr("out-dir", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("certs: encoding the intermediate's key: %w", err)
	}
	// The key first: a certificate on disk without its key is the
	// failure an operator notices, a key without a certificate is not.
	if err := writeAtomic(out.KeyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return nil, err
	}
	if err := writeAtomic(out.CertFile, PEMCerts(append([]*x509.Certificate{cert}, issuers...)), 0o644); err != nil {
		return nil, err
	}
	if err := writeAtomic(out.BundleFile, pemCert(anchor), 0o644); err != nil {
		return nil, err
	}
	out.Cert = cert
	return out, nil
}

// outFiles names the files to write, refusing to replace any without
// force.
func outFiles(dir string, force bool) (*Intermediate, error) {
	if dir == "" {
		return nil, refuse("out-dir", "no output directory given")
	}
	out := &Intermediate{CertFile: filepath.Join(dir, IntermediateCertFile), KeyFile: filepath.Join(dir, IntermediateKeyFile),
		BundleFile: filepath.Join(dir, IntermediateBundleFile)}
	if info, err := os.Stat(dir); err == nil && !info.IsDir() {
		return nil, refuse("out-dir", "%s is not a directory", dir)
	}
	if force {
		return out, nil
	}
	var present []string
	for _, f := range []string{out.CertFile, out.KeyFile, out.BundleFile} {
		if _, err := os.Lstat(f); err == nil {
			present = append(present, filepath.Base(f))
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, refuseErr("out-dir", err)
		}
	}
	if len(present) > 0 {
		return nil, refuse("out-dir", "%s already holds %s; refusing to replace a site's CA (give --force to replace it)",
			dir, strings.Join(present, ", "))
	}
	return out, nil
}

// readIssuer reads the signing CA from o.RootCertFile: the CA that signs
// (first), the issuing CAs between the intermediate and the root (the
// signing CA and those above it, none when the root signs), and the
// self-signed root (last).
func readIssuer(o IntermediateOptions, td spiffeid.TrustDomain, now time.Time) (parent *x509.Certificate, issuers []*x509.Certificate, anchor *x509.Certificate, err error) {
	file := o.RootCertFile
	if file == "" {
		return nil, nil, nil, refuse("root-cert", "no root certificate file given")
	}
	chain, err := readCerts(file)
	if err != nil {
		return nil, nil, nil, refuseErr("root-cert", err)
	}
	parent, anchor = chain[0], chain[len(chain)-1]
	if err := checkCA(parent, now, file); err != nil {
		return nil, nil, nil, refuseErr("root-cert", err)
	}
	if parent.MaxPathLenZero && parent.MaxPathLen == 0 {
		return nil, nil, nil, refuse("root-cert", "%s: CA %q may sign only leaf certificates (path length 0), not a site's intermediate",
			file, parent.Subject.String())
	}
	if anchor.CheckSignatureFrom(anchor) != nil {
		return nil, nil, nil, refuse("root-cert", "%s: the last certificate, %q, is not a self-signed root: "+
			"append the chain up to the hospital root, which becomes the site's trust bundle", file, anchor.Subject.String())
	}
	if len(chain) > 1 {
		issuers = chain[:len(chain)-1]
		if err := verifyChain(parent, chain[1:len(chain)-1], anchor, now); err != nil {
			return nil, nil, nil, refuse("root-cert", "%s: %q does not chain to the root at the end of the file: %w",
				file, parent.Subject.String(), err)
		}
	}
	// A root of another trust domain would make SVIDs no peer of this
	// one accepts; catch it here rather than at the site.
	for _, c := range chain {
		for _, u := range c.URIs {
			if u.Scheme != "spiffe" {
				continue
			}
			got, err := spiffeid.TrustDomainFromURI(u)
			if err != nil {
				return nil, nil, nil, refuse("root-cert", "%s: %q has the URI SAN %s: %w", file, c.Subject.String(), u, err)
			}
			if got != td {
				return nil, nil, nil, refuse("trust-domain", "%s differs from the root's: %q in %s is of trust domain %s (URI SAN %s)",
					td.Name(), c.Subject.String(), file, got.Name(), u)
			}
		}
	}
	for i, c := range chain[1:] {
		if err := strongKey(c.PublicKey); err != nil {
			return nil, nil, nil, refuse("root-cert", "%s: certificate %d, %q: %w", file, i+2, c.Subject.String(), err)
		}
	}
	return parent, issuers, anchor, nil
}

// strongKey refuses keys weaker than medmesh's own (ECDSA P-256): a
// site's identities are only as strong as the weakest key above them.
func strongKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if n := k.N.BitLen(); n < 2048 {
			return fmt.Errorf("weak key: RSA %d bits; want at least 2048", n)
		}
	case *ecdsa.PublicKey:
		if n := k.Curve.Params().BitSize; n < 256 {
			return fmt.Errorf("weak key: ECDSA %s; want P-256 or stronger", k.Curve.Params().Name)
		}
	case ed25519.PublicKey:
	default:
		return fmt.Errorf("key type %T is not supported; want ECDSA, RSA or Ed25519", pub)
	}
	return nil
}

func verifyChain(cert *x509.Certificate, above []*x509.Certificate, anchor *x509.Certificate, now time.Time) error {
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(anchor)
	for _, c := range above {
		inter.AddCert(c)
	}
	_, err := cert.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	return err
}
