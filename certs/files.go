package certs

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"medmesh/internal/atomicfile"
)

type urlURL = url.URL

var errNoRoot = errors.New("no root yet")

// store keeps a self-signed root in <state-dir>/ca.
type store struct{ dir string }

func (s *store) caDir() string        { return filepath.Join(s.dir, "ca") }
func (s *store) certPath() string     { return filepath.Join(s.caDir(), "root.pem") }
func (s *store) keyPath() string      { return filepath.Join(s.caDir(), "root-key.pem") }
func (s *store) previousPath() string { return filepath.Join(s.caDir(), "previous-roots.json") }

type savedPrevious struct {
	CertPEM string    `json:"certPem"`
	Until   time.Time `json:"until"`
}

func (s *store) loadRoot() (crypto.Signer, *x509.Certificate, []previousRoot, error) {
	if _, err := os.Stat(s.certPath()); errors.Is(err, fs.ErrNotExist) {
		if _, kerr := os.Stat(s.keyPath()); kerr == nil {
			return nil, nil, nil, fmt.Errorf("certs: %s exists but %s does not; refusing to create a new root over a lone key",
				s.keyPath(), s.certPath())
		}
		return nil, nil, nil, errNoRoot
	}
	cert, err := readCert(s.certPath())
	if err != nil {
		return nil, nil, nil, err
	}
	key, err := readKey(s.keyPath())
	if err != nil {
		return nil, nil, nil, err
	}
	if err := matchKey(cert, key, s.certPath(), s.keyPath()); err != nil {
		return nil, nil, nil, err
	}
	var prev []previousRoot
	if b, err := os.ReadFile(s.previousPath()); err == nil {
		var saved []savedPrevious
		if err := json.Unmarshal(b, &saved); err != nil {
			return nil, nil, nil, fmt.Errorf("certs: %s: %w", s.previousPath(), err)
		}
		for _, p := range saved {
			c, err := parseCert([]byte(p.CertPEM), s.previousPath())
			if err != nil {
				return nil, nil, nil, err
			}
			prev = append(prev, previousRoot{Cert: c, Until: p.Until})
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil, fmt.Errorf("certs: %w", err)
	}
	return key, cert, prev, nil
}

// saveRoot writes the root and its key (0600) atomically, then the roots
// still trusted during an overlap.
func (s *store) saveRoot(key crypto.Signer, cert *x509.Certificate, prev []previousRoot) error {
	if err := os.MkdirAll(s.caDir(), 0o700); err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("certs: encoding the root key: %w", err)
	}
	if err := writeAtomic(s.keyPath(), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return err
	}
	if err := writeAtomic(s.certPath(), pemCert(cert), 0o644); err != nil {
		return err
	}
	saved := make([]savedPrevious, 0, len(prev))
	for _, p := range prev {
		saved = append(saved, savedPrevious{CertPEM: string(pemCert(p.Cert)), Until: p.Until})
	}
	b, _ := json.Marshal(saved)
	return writeAtomic(s.previousPath(), b, 0o644)
}

// loadOperatorCA loads a CA the operator supplies: a root, or an
// intermediate that chains to the anchors in BundleFile.
func (ca *CA) loadOperatorCA(o Options) error {
	if o.CertFile == "" || o.KeyFile == "" {
		return errors.New("certs: an operator CA needs both a certificate file and a key file")
	}
	chain, err := readCerts(o.CertFile)
	if err != nil {
		return err
	}
	key, err := readKey(o.KeyFile)
	if err != nil {
		return err
	}
	cert := chain[0]
	if err := matchKey(cert, key, o.CertFile, o.KeyFile); err != nil {
		return err
	}
	if err := checkCA(cert, ca.now(), o.CertFile); err != nil {
		return err
	}
	if err := ca.checkSignerSite(cert, o.CertFile); err != nil {
		return err
	}
	selfSigned := cert.CheckSignatureFrom(cert) == nil
	var anchors []*x509.Certificate
	switch {
	case o.BundleFile != "":
		if anchors, err = readCerts(o.BundleFile); err != nil {
			return err
		}
	case selfSigned:
		anchors = []*x509.Certificate{cert}
	default:
		return fmt.Errorf("certs: %s is an intermediate CA: give the hospital's root certificates as the bundle file", o.CertFile)
	}
	// The signing CA must chain to the anchors, or every SVID it signs
	// would be rejected by every peer.
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	for _, a := range anchors {
		roots.AddCert(a)
	}
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: ca.now(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return fmt.Errorf("certs: %s does not chain to the trust anchors in %s: %w", o.CertFile, orSelf(o.BundleFile, o.CertFile), err)
	}
	ca.signer, ca.cert, ca.anchors = key, cert, anchors
	if !selfSigned {
		ca.chain = chain // the intermediate (and any above it) go with each SVID
	}
	return nil
}

func orSelf(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// readKey reads the CA's private key (ECDSA, the only kind medmesh signs
// SVIDs with), refusing a file that group or others can read.
func readKey(path string) (crypto.Signer, error) {
	k, err := readPrivateKey(path)
	if err != nil {
		return nil, err
	}
	signer, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("certs: %s: key is %T; medmesh signs with ECDSA P-256", path, k)
	}
	return signer, nil
}

// readPrivateKey reads a private key of any kind Go signs with (PKCS #8,
// SEC 1 EC or PKCS #1 RSA PEM), refusing a file that group or others can
// read: a leaked CA key lets anyone impersonate any clinical service.
func readPrivateKey(path string) (crypto.Signer, error) {
	info, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("certs: CA key: %w", err)
	}
	if perm := info.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("certs: %s: private key file is readable by group or others (mode %04o); run chmod 600 %s",
			path, perm, path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("certs: CA key: %w", err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, fmt.Errorf("certs: %s: no PEM block found", path)
	}
	var k any
	switch block.Type {
	case "PRIVATE KEY":
		k, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("certs: %s: PEM block %q is not a private key", path, block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("certs: %s: cannot parse the private key: %w", path, err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("certs: %s: key is %T, which cannot sign", path, k)
	}
	return signer, nil
}

func readCert(path string) (*x509.Certificate, error) {
	certs, err := readCerts(path)
	if err != nil {
		return nil, err
	}
	return certs[0], nil
}

func readCerts(path string) ([]*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	var out []*x509.Certificate
	for rest := b; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certs: %s: %w", path, err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("certs: %s: no PEM certificate found", path)
	}
	return out, nil
}

func parseCert(b []byte, path string) (*x509.Certificate, error) {
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, fmt.Errorf("certs: %s: no PEM certificate found", path)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("certs: %s: %w", path, err)
	}
	return c, nil
}

func matchKey(cert *x509.Certificate, key crypto.Signer, certPath, keyPath string) error {
	pub, ok := cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(key.Public()) {
		return fmt.Errorf("certs: %s and %s do not match: the key is not the certificate's", keyPath, certPath)
	}
	return nil
}

func pemCert(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

// PEMCerts encodes certificates as PEM, leaf first.
func PEMCerts(certs []*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pemCert(c)...)
	}
	return out
}

func writeAtomic(path string, b []byte, mode os.FileMode) error {
	if err := atomicfile.Write(path, b, mode); err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	return nil
}
