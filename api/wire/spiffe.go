package wire

// ServiceID is the SPIFFE ID of a service (CONTRACT.md):
// spiffe://<trust-domain>/ns/<namespace>/svc/<service>. It is the one
// place the format is written; certs validates it when it signs.
func ServiceID(trustDomain, namespace, service string) string {
	return TrustDomainPrefix(trustDomain) + "ns/" + namespace + "/svc/" + service
}

// TrustDomainPrefix is what every SPIFFE ID of the trust domain starts
// with: "spiffe://<trust-domain>/".
func TrustDomainPrefix(trustDomain string) string { return "spiffe://" + trustDomain + "/" }

// AnyInTrustDomain is the principal standing for every workload of the
// trust domain (a wildcard "*" intention source).
func AnyInTrustDomain(trustDomain string) string { return TrustDomainPrefix(trustDomain) + "*" }
