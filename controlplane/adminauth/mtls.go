package adminauth

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// AdminID is the SPIFFE ID of an operator or tool with role:
// spiffe://<td>/admin/<role>/<name>. The role is part of the signed
// identity, so granting it is issuing a certificate (medmesh ca
// admin-cert) and revoking it is letting the certificate expire: keep
// their lifetimes short.
func AdminID(td spiffeid.TrustDomain, role Role, name string) (spiffeid.ID, error) {
	if role == RoleNone {
		return spiffeid.ID{}, fmt.Errorf("admin identity for %q: no role", name)
	}
	if err := spiffeid.ValidatePathSegment(name); err != nil || name == "" {
		return spiffeid.ID{}, fmt.Errorf("admin identity name %q: want one path segment of letters, digits, '.', '-' or '_'", name)
	}
	return spiffeid.FromSegments(td, "admin", role.String(), name)
}

// RoleOf returns the admin role an ID carries: RoleNone for every other
// ID (a workload's /ns/<ns>/svc/<svc> SVID grants nothing here).
func RoleOf(id spiffeid.ID, td spiffeid.TrustDomain) Role {
	if id.TrustDomain() != td {
		return RoleNone
	}
	seg := strings.Split(strings.TrimPrefix(id.Path(), "/"), "/")
	if len(seg) != 3 || seg[0] != "admin" || seg[2] == "" {
		return RoleNone
	}
	r, err := ParseRole(seg[1])
	if err != nil {
		return RoleNone
	}
	return r
}

// MTLS authenticates the client certificate of a TLS connection whose
// chain ServerTLS has already verified against the mesh's trust bundle.
type MTLS struct{ TrustDomain spiffeid.TrustDomain }

// Authenticate implements Authenticator.
func (m MTLS) Authenticate(r *http.Request) (Principal, bool, error) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return Principal{}, false, nil
	}
	id, err := x509svid.IDFromCert(r.TLS.PeerCertificates[0])
	if err != nil {
		return Principal{}, true, fmt.Errorf("%w: client certificate: %v", ErrRefused, err)
	}
	return Principal{ID: id.String(), Via: "mtls", Role: RoleOf(id, m.TrustDomain)}, true, nil
}

// CertSource is the CA (certs.CA): it signs the TLS port's serving
// certificate and holds the trust bundle client certificates must chain to.
type CertSource interface {
	ServingCert(hosts []string, ttl time.Duration) (*tls.Certificate, error)
	Bundle() *x509bundle.Bundle
}

// ServerTLS is the admin TLS port's configuration: a serving certificate
// for hosts from the CA (renewed at half-life, so it follows a root
// rotation), and client certificates optional (a caller may present a
// bearer token instead) but, when presented, verified as X.509-SVIDs of
// the trust domain against the CA's current bundle.
func ServerTLS(ca CertSource, td spiffeid.TrustDomain, hosts []string, log *slog.Logger) (*tls.Config, error) {
	sc := &servingCert{ca: ca, hosts: hosts, log: log}
	if _, err := sc.get(nil); err != nil {
		return nil, err
	}
	verify := tlsconfig.VerifyPeerCertificate(bundleSource(ca.Bundle), tlsconfig.AuthorizeMemberOf(td))
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: sc.get,
		ClientAuth:     tls.RequestClientCert,
		VerifyPeerCertificate: func(raw [][]byte, chains [][]*x509.Certificate) error {
			if len(raw) == 0 {
				return nil // no certificate: the Guard answers 401 unless a token comes
			}
			return verify(raw, chains)
		},
	}, nil
}

// bundleSource reads the CA's bundle at each handshake: rotated roots
// come and go.
type bundleSource func() *x509bundle.Bundle

func (f bundleSource) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	return f().GetX509BundleForTrustDomain(td)
}

type servingCert struct {
	ca    CertSource
	hosts []string
	log   *slog.Logger

	mu   sync.Mutex
	cert *tls.Certificate
}

func (s *servingCert) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.cert; c != nil && time.Until(c.Leaf.NotAfter) > c.Leaf.NotAfter.Sub(c.Leaf.NotBefore)/2 {
		return c, nil
	}
	c, err := s.ca.ServingCert(s.hosts, 0)
	if err != nil {
		if s.cert != nil && time.Now().Before(s.cert.Leaf.NotAfter) {
			s.log.Error("renewing the admin TLS serving certificate; keeping the current one", "err", err)
			return s.cert, nil
		}
		return nil, fmt.Errorf("admin TLS serving certificate for %v: %w", s.hosts, err)
	}
	s.cert = c
	return c, nil
}
