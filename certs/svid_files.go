package certs

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// File names in an SVID directory, as proxyless gRPC's file_watcher
// certificate provider reads them (see `medmesh bootstrap --svid-dir`).
const (
	SVIDCertFile   = "svid.pem"
	SVIDKeyFile    = "svid_key.pem"
	SVIDBundleFile = "bundle.pem"
)

// WriteSVIDDir writes an SVID and the trust bundle into dir. Each file is
// replaced atomically, the bundle first and the key before the
// certificate, so a reader never pairs a new certificate with an old key
// or finds a certificate its bundle cannot verify.
func WriteSVIDDir(dir string, svid *x509svid.SVID, bundle *x509bundle.Bundle) error {
	certPEM, keyPEM, err := svid.Marshal()
	if err != nil {
		return fmt.Errorf("certs: encoding the SVID of %s: %w", svid.ID, err)
	}
	bundlePEM, err := bundle.Marshal()
	if err != nil {
		return fmt.Errorf("certs: encoding the bundle: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	for _, f := range []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{SVIDBundleFile, bundlePEM, 0o644},
		{SVIDKeyFile, keyPEM, 0o600},
		{SVIDCertFile, certPEM, 0o644},
	} {
		if err := writeAtomic(filepath.Join(dir, f.name), f.data, f.mode); err != nil {
			return err
		}
	}
	return nil
}
