package wire

import (
	"errors"
	"fmt"
	"strings"
)

// ServiceID is the SPIFFE ID of a service without a site:
// spiffe://<trust-domain>/ns/<namespace>/svc/<service>. It is the one
// place the format is written; certs validates it when it signs.
func ServiceID(trustDomain, namespace, service string) string {
	return TrustDomainPrefix(trustDomain) + "ns/" + namespace + "/svc/" + service
}

// SiteServiceID is the SPIFFE ID of a service at an edge site:
// spiffe://<trust-domain>/ns/<namespace>/svc/<service>/site/<site>, or
// ServiceID's form when site is "" (a single-site control plane). Like
// ServiceID it does not validate; certs does when it signs. A callee reads
// a verified caller's site back with ParseServiceID; RBAC allows callers of
// a service per site with this exact ID, or from any site with the prefix
// ServiceID(...)+"/site/" (never the bare ServiceID as a prefix, which
// would also match every service whose name starts with this one's).
func SiteServiceID(trustDomain, namespace, service, site string) string {
	if site == "" {
		return ServiceID(trustDomain, namespace, service)
	}
	return ServiceID(trustDomain, namespace, service) + "/site/" + site
}

// ParseServiceID splits a service's SPIFFE ID in either form (site is ""
// for the form without a site). Anything else is refused (ok false): another
// scheme, a query or fragment, empty or dot segments, characters SPIFFE does
// not allow, extra or missing segments, or a site that is not a valid site
// name (ValidateSite).
func ParseServiceID(id string) (trustDomain, namespace, service, site string, ok bool) {
	rest, found := strings.CutPrefix(id, "spiffe://")
	if !found {
		return "", "", "", "", false
	}
	trustDomain, path, found := strings.Cut(rest, "/")
	if !found || !validTrustDomain(trustDomain) {
		return "", "", "", "", false
	}
	segs := strings.Split(path, "/")
	for _, s := range segs {
		if !validPathSegment(s) {
			return "", "", "", "", false
		}
	}
	switch {
	case len(segs) == 4 && segs[0] == "ns" && segs[2] == "svc":
	case len(segs) == 6 && segs[0] == "ns" && segs[2] == "svc" && segs[4] == "site":
		if ValidateSite(segs[5]) != nil {
			return "", "", "", "", false
		}
		site = segs[5]
	default:
		return "", "", "", "", false
	}
	return trustDomain, segs[1], segs[3], site, true
}

// ValidateSite checks an edge site's name: a DNS label in lower case, 1 to
// 63 letters, digits and hyphens, neither starting nor ending with a
// hyphen. The same name is a Consul datacenter and a Kubernetes object
// name at the site, both of which take DNS labels.
func ValidateSite(site string) error {
	switch {
	case site == "":
		return errors.New("site name is empty")
	case len(site) > 63:
		return fmt.Errorf("site name %q is %d characters long; at most 63 (a DNS label)", site, len(site))
	case site[0] == '-' || site[len(site)-1] == '-':
		return fmt.Errorf("site name %q starts or ends with a hyphen; want a DNS label", site)
	}
	for _, r := range site {
		if (r < 'a' || r > 'z') && (r < '0' || r > '9') && r != '-' {
			return fmt.Errorf("site name %q has %q; want a DNS label in lower case (a-z, 0-9, -)", site, r)
		}
	}
	return nil
}

// validTrustDomain: SPIFFE allows lower-case letters, digits, ".", "-"
// and "_" in a trust domain name.
func validTrustDomain(td string) bool {
	if td == "" {
		return false
	}
	for _, r := range td {
		if (r < 'a' || r > 'z') && (r < '0' || r > '9') && r != '.' && r != '-' && r != '_' {
			return false
		}
	}
	return true
}

// validPathSegment: SPIFFE allows letters, digits, ".", "-" and "_" in a
// path segment, which must not be empty, "." or "..".
func validPathSegment(s string) bool {
	if s == "" || s == "." || s == ".." {
		return false
	}
	for _, r := range s {
		if (r < 'a' || r > 'z') && (r < 'A' || r > 'Z') && (r < '0' || r > '9') && r != '.' && r != '-' && r != '_' {
			return false
		}
	}
	return true
}

// TrustDomainPrefix is what every SPIFFE ID of the trust domain starts
// with: "spiffe://<trust-domain>/".
func TrustDomainPrefix(trustDomain string) string { return "spiffe://" + trustDomain + "/" }

// AnyInTrustDomain is the principal standing for every workload of the
// trust domain (a wildcard "*" intention source).
func AnyInTrustDomain(trustDomain string) string { return TrustDomainPrefix(trustDomain) + "*" }

// AnyAtSite is the principal standing for every workload of one site
// ("spiffe://<td>/*/site/<site>"): a wildcard intention or a service that
// admits any caller, narrowed to the sites residency allows. It is not a
// SPIFFE ID; RBAC translates it to a pattern (AnyAtSiteOf reads it back).
func AnyAtSite(trustDomain, site string) string {
	return TrustDomainPrefix(trustDomain) + "*/site/" + site
}

// AnyAtSiteOf returns the site of an AnyAtSite principal.
func AnyAtSiteOf(trustDomain, principal string) (site string, ok bool) {
	site, ok = strings.CutPrefix(principal, TrustDomainPrefix(trustDomain)+"*/site/")
	return site, ok && site != ""
}
