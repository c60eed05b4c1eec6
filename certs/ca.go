// Package certs is medmesh's SPIFFE certificate authority: it signs
// X.509-SVIDs whose only URI SAN is a workload's SPIFFE ID, keeps the trust
// bundle, and rotates its root with an overlap during which both roots are
// trusted. The CA is either a self-signed root that medmesh creates on
// first start and keeps in its state directory, or a root or intermediate
// supplied by the operator so that medmesh chains to the hospital's PKI.
//
// SVIDs and bundles are go-spiffe types (spiffeid, x509svid, x509bundle),
// so what medmesh issues is checked with the same code workloads use.
package certs

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"sync"
	"time"

	"medmesh/api/wire"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// Defaults.
const (
	DefaultSVIDTTL = time.Hour
	DefaultRootTTL = 5 * 365 * 24 * time.Hour
	// ClockSkew backdates every certificate, so a workload whose clock
	// runs a little behind still accepts it.
	ClockSkew = time.Minute
)

// ErrNoCA means no CA files and no state directory were given.
var ErrNoCA = errors.New("certs: no CA: give a state directory or CA certificate and key files")

// Options configure a CA.
type Options struct {
	TrustDomain string
	// StateDir holds the self-signed root medmesh creates on first start
	// (ca/root.pem, ca/root-key.pem; the key file must be mode 0600).
	StateDir string
	// CertFile and KeyFile name an operator-supplied signing CA (root or
	// intermediate). BundleFile names the trust anchors; it is required
	// for an intermediate and defaults to the certificate for a root.
	CertFile, KeyFile, BundleFile string
	SVIDTTL                       time.Duration
	RootTTL                       time.Duration
	// Site is the edge site this CA issues identities for; "" for a
	// single-site control plane. With a site, ServiceID returns
	// spiffe://<td>/ns/<ns>/svc/<svc>/site/<site> (wire.SiteServiceID),
	// SignSVID signs only that site's service IDs, and an operator CA made
	// for a site (NewIntermediate) must be this site's.
	Site string
	// Now is the clock (tests); time.Now by default.
	Now func() time.Time
}

// CA signs X.509-SVIDs for one trust domain.
type CA struct {
	td      spiffeid.TrustDomain
	site    string // "" or a valid site name (wire.ValidateSite)
	svidTTL time.Duration
	rootTTL time.Duration
	now     func() time.Time
	store   *store // nil for an operator-supplied CA

	mu       sync.RWMutex
	signer   crypto.Signer
	cert     *x509.Certificate   // signs SVIDs (root or intermediate)
	chain    []*x509.Certificate // intermediates sent with each SVID
	anchors  []*x509.Certificate // the configured trust anchors
	previous []previousRoot      // rotated-out roots still trusted
}

// previousRoot is a root kept in the bundle until Until.
type previousRoot struct {
	Cert  *x509.Certificate
	Until time.Time
}

// New loads or creates the CA. Every problem with a file names the file
// and what is wrong with it.
func New(o Options) (*CA, error) {
	td, err := spiffeid.TrustDomainFromString(o.TrustDomain)
	if err != nil {
		return nil, fmt.Errorf("certs: trust domain %q: %w", o.TrustDomain, err)
	}
	if o.Site != "" {
		if err := wire.ValidateSite(o.Site); err != nil {
			return nil, fmt.Errorf("certs: site: %w", err)
		}
	}
	ca := &CA{td: td, site: o.Site, svidTTL: o.SVIDTTL, rootTTL: o.RootTTL, now: o.Now}
	if ca.svidTTL <= 0 {
		ca.svidTTL = DefaultSVIDTTL
	}
	if ca.rootTTL <= 0 {
		ca.rootTTL = DefaultRootTTL
	}
	if ca.now == nil {
		ca.now = time.Now
	}
	switch {
	case o.CertFile != "" || o.KeyFile != "":
		err = ca.loadOperatorCA(o)
	case o.StateDir != "":
		ca.store = &store{dir: o.StateDir}
		err = ca.loadOrCreateRoot()
	default:
		err = ErrNoCA
	}
	if err != nil {
		return nil, err
	}
	return ca, nil
}

// TrustDomain is the CA's trust domain.
func (ca *CA) TrustDomain() spiffeid.TrustDomain { return ca.td }

// Site is the edge site the CA issues identities for ("" for none).
func (ca *CA) Site() string { return ca.site }

// SigningNotAfter is when the certificate that signs SVIDs (the root, or
// the site's intermediate) expires: after it no SVID can be issued, so an
// edge site needs a new intermediate from the hub before then.
func (ca *CA) SigningNotAfter() time.Time {
	ca.mu.RLock()
	defer ca.mu.RUnlock()
	return ca.cert.NotAfter
}

// String describes the CA without any key material.
func (ca *CA) String() string {
	ca.mu.RLock()
	defer ca.mu.RUnlock()
	site := ""
	if ca.site != "" {
		site = fmt.Sprintf(", site %s", ca.site)
	}
	return fmt.Sprintf("CA{trust domain %s%s, signer %q, not after %s}", ca.td, site, ca.cert.Subject.CommonName,
		ca.cert.NotAfter.UTC().Format(time.RFC3339))
}

// Bundle returns the trust bundle: the configured anchors plus rotated-out
// roots whose overlap has not ended.
func (ca *CA) Bundle() *x509bundle.Bundle {
	ca.mu.RLock()
	defer ca.mu.RUnlock()
	b := x509bundle.FromX509Authorities(ca.td, ca.anchors)
	now := ca.now()
	for _, p := range ca.previous {
		if now.Before(p.Until) {
			b.AddX509Authority(p.Cert)
		}
	}
	return b
}

// ServiceID is the SPIFFE ID of a service:
// spiffe://<trust-domain>/ns/<namespace>/svc/<service>, followed by
// /site/<site> when the CA serves an edge site (wire.SiteServiceID).
func (ca *CA) ServiceID(namespace, service string) (spiffeid.ID, error) {
	if namespace == "" {
		namespace = "default"
	}
	// Each name must be one valid path segment: a "/" in a service name
	// would otherwise claim a deeper identity.
	err := errors.Join(spiffeid.ValidatePathSegment(namespace), spiffeid.ValidatePathSegment(service))
	var id spiffeid.ID
	if err == nil {
		id, err = spiffeid.FromString(wire.SiteServiceID(ca.td.Name(), namespace, service, ca.site))
	}
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("certs: SPIFFE ID for service %q in namespace %q: %w", service, namespace, err)
	}
	return id, nil
}

// NewSVID creates a key pair and signs an X.509-SVID for id, valid for the
// CA's SVID TTL.
func (ca *CA) NewSVID(id spiffeid.ID) (*x509svid.SVID, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("certs: generating a key for %s: %w", id, err)
	}
	certs, err := ca.SignSVID(id, key.Public())
	if err != nil {
		return nil, err
	}
	return &x509svid.SVID{ID: id, Certificates: certs, PrivateKey: key}, nil
}

// SignSVID signs an X.509-SVID for id over pub (e.g. from a workload's
// CSR, so its key never leaves it). It returns the leaf and the
// intermediates, leaf first.
func (ca *CA) SignSVID(id spiffeid.ID, pub crypto.PublicKey) ([]*x509.Certificate, error) {
	if id.TrustDomain() != ca.td {
		return nil, fmt.Errorf("certs: %s is not in trust domain %s", id, ca.td)
	}
	ca.mu.RLock()
	signer, parent, chain := ca.signer, ca.cert, ca.chain
	ca.mu.RUnlock()
	if err := ca.checkSite(id, parent); err != nil {
		return nil, err
	}
	now := ca.now()
	notAfter := now.Add(ca.svidTTL)
	if notAfter.After(parent.NotAfter) {
		// An SVID never outlives the CA that signed it.
		notAfter = parent.NotAfter
	}
	serial, err := serialNumber()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		// SPIFFE X.509-SVIDs identify by URI SAN only; the subject is
		// informational and carries no workload data.
		Subject:               pkix.Name{Organization: []string{"medmesh"}},
		URIs:                  []*urlURL{id.URL()},
		NotBefore:             now.Add(-ClockSkew),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment | x509.KeyUsageKeyAgreement,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		return nil, fmt.Errorf("certs: signing an SVID for %s: %w", id, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return append([]*x509.Certificate{leaf}, chain...), nil
}

// RotateRoot replaces a self-signed root with a new one. The old root
// stays in the bundle for overlap, so SVIDs it signed keep verifying
// while proxies receive new ones.
func (ca *CA) RotateRoot(overlap time.Duration) error {
	if ca.store == nil {
		return errors.New("certs: the CA is supplied by the operator; rotate it in the hospital PKI and restart")
	}
	key, cert, err := newRoot(ca.td, ca.now(), ca.rootTTL)
	if err != nil {
		return err
	}
	ca.mu.Lock()
	defer ca.mu.Unlock()
	prev := append(ca.livePrevious(), previousRoot{Cert: ca.cert, Until: ca.now().Add(overlap)})
	if err := ca.store.saveRoot(key, cert, prev); err != nil {
		return err
	}
	ca.signer, ca.cert, ca.chain, ca.anchors, ca.previous = key, cert, nil, []*x509.Certificate{cert}, prev
	return nil
}

// livePrevious drops rotated-out roots whose overlap ended. Callers hold mu.
func (ca *CA) livePrevious() []previousRoot {
	var out []previousRoot
	now := ca.now()
	for _, p := range ca.previous {
		if now.Before(p.Until) {
			out = append(out, p)
		}
	}
	return out
}

func (ca *CA) loadOrCreateRoot() error {
	key, cert, prev, err := ca.store.loadRoot()
	if errors.Is(err, errNoRoot) {
		key, cert, err = newRoot(ca.td, ca.now(), ca.rootTTL)
		if err != nil {
			return err
		}
		if err := ca.store.saveRoot(key, cert, nil); err != nil {
			return err
		}
	} else if err != nil {
		return err
	}
	if err := checkCA(cert, ca.now(), ca.store.certPath()); err != nil {
		return err
	}
	ca.signer, ca.cert, ca.anchors, ca.previous = key, cert, []*x509.Certificate{cert}, prev
	return nil
}

func newRoot(td spiffeid.TrustDomain, now time.Time, ttl time.Duration) (*ecdsa.PrivateKey, *x509.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("certs: generating the root key: %w", err)
	}
	serial, err := serialNumber()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"medmesh"}, CommonName: "medmesh root CA " + td.String()},
		URIs:                  []*urlURL{td.ID().URL()},
		NotBefore:             now.Add(-ClockSkew),
		NotAfter:              now.Add(ttl),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, fmt.Errorf("certs: creating the root certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	return key, cert, err
}

// checkCA refuses a certificate that cannot sign SVIDs now.
func checkCA(cert *x509.Certificate, now time.Time, path string) error {
	switch {
	case !cert.IsCA || cert.KeyUsage&x509.KeyUsageCertSign == 0:
		return fmt.Errorf("certs: %s: certificate %q is not a CA (no CA basic constraint or no certSign key usage)", path, cert.Subject)
	case now.After(cert.NotAfter):
		return fmt.Errorf("certs: %s: CA certificate expired at %s", path, cert.NotAfter.UTC().Format(time.RFC3339))
	case now.Before(cert.NotBefore):
		return fmt.Errorf("certs: %s: CA certificate not valid before %s", path, cert.NotBefore.UTC().Format(time.RFC3339))
	}
	return nil
}

func serialNumber() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("certs: serial number: %w", err)
	}
	return n, nil
}
