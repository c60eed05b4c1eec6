package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net"
	"time"
)

// DefaultServingTTL is the lifetime of a TLS serving certificate (the
// sidecar injector's). The API server re-dials webhooks often, so a
// short life costs nothing; callers renew at half-life.
const DefaultServingTTL = 24 * time.Hour

// ServingCert signs a TLS server certificate for hosts (DNS names, or IP
// addresses) with the CA, for a server that Kubernetes or an operator
// reaches by name rather than by SPIFFE ID (the admission webhook). It
// carries no SPIFFE URI SAN: it must never be mistaken for a workload's
// SVID. The chain (leaf, then intermediates) verifies against Bundle().
func (ca *CA) ServingCert(hosts []string, ttl time.Duration) (*tls.Certificate, error) {
	if len(hosts) == 0 {
		return nil, errors.New("certs: serving certificate: no DNS names or IP addresses")
	}
	if ttl <= 0 {
		ttl = DefaultServingTTL
	}
	tmpl := &x509.Certificate{
		// Web PKI verifiers ignore the CN when SANs are present; it only
		// makes the certificate recognisable in a log or openssl output.
		Subject:               pkix.Name{Organization: []string{"medmesh"}, CommonName: hosts[0]},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			continue
		}
		if h == "" {
			return nil, errors.New("certs: serving certificate: empty DNS name")
		}
		tmpl.DNSNames = append(tmpl.DNSNames, h)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("certs: serving certificate key for %v: %w", hosts, err)
	}
	if tmpl.SerialNumber, err = serialNumber(); err != nil {
		return nil, err
	}
	ca.mu.RLock()
	signer, parent, chain := ca.signer, ca.cert, ca.chain
	ca.mu.RUnlock()
	now := ca.now()
	tmpl.NotBefore, tmpl.NotAfter = now.Add(-ClockSkew), now.Add(ttl)
	if tmpl.NotAfter.After(parent.NotAfter) {
		tmpl.NotAfter = parent.NotAfter
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), signer)
	if err != nil {
		return nil, fmt.Errorf("certs: signing a serving certificate for %v: %w", hosts, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	out := &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
	for _, c := range chain {
		out.Certificate = append(out.Certificate, c.Raw)
	}
	return out, nil
}

// BundlePEM is the trust bundle as PEM: what a Kubernetes webhook
// configuration's caBundle, or a client of ServingCert's servers, trusts.
func (ca *CA) BundlePEM() []byte {
	return PEMCerts(ca.Bundle().X509Authorities())
}
