package certs

import (
	"crypto/x509"
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"medmesh/api/wire"
)

// SiteMarkerPrefix marks the edge site an intermediate CA was made for
// (NewIntermediate): its Subject carries the organizational unit
// "medmesh-site:<site>".
//
// The marker is not a URI SAN: the X.509-SVID spec allows exactly one URI
// SAN (section 2) and says a signing certificate's SPIFFE ID must have no
// path (section 3.2), so the intermediate's only URI SAN is spiffe://<td>.
// The Subject of a signing certificate is left to the issuer, and every
// X.509 tool shows it (openssl x509 -noout -subject).
const SiteMarkerPrefix = "medmesh-site:"

// SiteOf returns the site an intermediate was made for, "" for a CA with
// no marker (medmesh's own root, or an intermediate from the hospital PKI
// that may serve any site). Two different markers are an error: such a
// CA cannot be bound to one site.
func SiteOf(cert *x509.Certificate) (string, error) {
	site := ""
	for _, ou := range cert.Subject.OrganizationalUnit {
		s, ok := strings.CutPrefix(ou, SiteMarkerPrefix)
		if !ok {
			continue
		}
		if err := wire.ValidateSite(s); err != nil {
			return "", fmt.Errorf("site marker %q: %w", ou, err)
		}
		if site != "" && site != s {
			return "", fmt.Errorf("marked for two sites, %q and %q", site, s)
		}
		site = s
	}
	return site, nil
}

// checkSignerSite refuses an operator CA made for another site than the
// one this CA serves: its SVIDs would claim a site whose intermediate did
// not sign them, and a copied key file must not let one site mint another
// site's identities.
func (ca *CA) checkSignerSite(cert *x509.Certificate, path string) error {
	marked, err := SiteOf(cert)
	switch {
	case err != nil:
		return fmt.Errorf("certs: %s: %w", path, err)
	case marked == "" || marked == ca.site:
		return nil
	case ca.site == "":
		return fmt.Errorf("certs: %s is the intermediate CA of site %q, but no site was given: "+
			"run the control plane with site %q (--site %s), or use a CA not made for a site", path, marked, marked, marked)
	default:
		return fmt.Errorf("certs: %s is the intermediate CA of site %q, not of site %q (this control plane's site): "+
			"use site %q's own intermediate (medmesh ca intermediate --site %s)", path, marked, ca.site, ca.site, ca.site)
	}
}

// checkSite refuses to sign an ID that is not a service of the CA's site
// (defence in depth: ServiceID never makes one, but SignSVID also serves
// IDs built elsewhere). A CA without a site signs any ID of its trust
// domain, as before sites existed.
func (ca *CA) checkSite(id spiffeid.ID, signer *x509.Certificate) error {
	if ca.site == "" {
		return nil
	}
	_, _, _, site, ok := wire.ParseServiceID(id.String())
	if ok && site == ca.site {
		return nil
	}
	by := "this CA"
	if marked, _ := SiteOf(signer); marked != "" {
		by = fmt.Sprintf("intermediate %q, made for site %q,", signer.Subject.CommonName, marked)
	}
	if !ok || site == "" {
		return fmt.Errorf("certs: refusing to sign %s: it is not a service ID of site %q, and %s signs for site %q only", id, ca.site, by, ca.site)
	}
	return fmt.Errorf("certs: refusing to sign %s: it is of site %q, and %s signs for site %q only", id, site, by, ca.site)
}
