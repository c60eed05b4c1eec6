package translate

import (
	"regexp"
	"strings"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	rbacnetv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"

	"medmesh/api/wire"
	"medmesh/controlplane/ir"
)

// Authorization is enforced on the inbound side by caller SPIFFE ID, which
// only means something once the caller proved it in an mTLS handshake, so
// RBAC is emitted only with mTLS on. The same policy serves Envoy (HTTP and
// network RBAC filters) and grpc-go servers (HTTP RBAC filter).

// rbacPolicy allows exactly the callers a service's Authz allows.
func rbacPolicy(m *ir.Mesh, a ir.Authz) *rbacv3.RBAC {
	var principals []*rbacv3.Principal
	for _, id := range a.Allowed {
		principals = append(principals, principalExact(m, id))
	}
	if a.OthersAllowed {
		// Any workload of the trust domain (at an edge site: of the sites
		// in Others), except those denied by name.
		anyWorkload := &rbacv3.Principal{Identifier: &rbacv3.Principal_Authenticated_{Authenticated: &rbacv3.Principal_Authenticated{
			PrincipalName: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: wire.TrustDomainPrefix(m.TrustDomain)}},
		}}}
		if len(a.Others) > 0 {
			anyWorkload = callers(m, a.Others)
		}
		if len(a.Denied) == 0 {
			principals = append(principals, anyWorkload)
		} else {
			var denied []*rbacv3.Principal
			for _, id := range a.Denied {
				denied = append(denied, principalExact(m, id))
			}
			principals = append(principals, &rbacv3.Principal{Identifier: &rbacv3.Principal_AndIds{AndIds: &rbacv3.Principal_Set{Ids: []*rbacv3.Principal{
				anyWorkload,
				{Identifier: &rbacv3.Principal_NotId{NotId: &rbacv3.Principal{Identifier: &rbacv3.Principal_OrIds{OrIds: &rbacv3.Principal_Set{Ids: denied}}}}},
			}}}})
		}
	}
	rules := &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW}
	if len(principals) > 0 {
		// With no allowed caller the ALLOW action with no policy denies
		// everyone: the default-deny of a PHI service nobody may call.
		rules.Policies = map[string]*rbacv3.Policy{"intentions": {
			Permissions: []*rbacv3.Permission{{Rule: &rbacv3.Permission_Any{Any: true}}},
			Principals:  principals,
		}}
	}
	addAccessRules(m, rules, a.Rules)
	return rules
}

// principalExact matches one SPIFFE ID; "spiffe://<td>/*" (an intention
// from any source) matches every workload of the trust domain, and
// wire.AnyAtSite every workload of one site (a pattern: the site is the
// ID's last segment).
func principalExact(m *ir.Mesh, id string) *rbacv3.Principal {
	sm := &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: id}}
	if site, ok := wire.AnyAtSiteOf(m.TrustDomain, id); ok {
		sm.MatchPattern = &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{
			Regex: "^" + regexp.QuoteMeta(wire.TrustDomainPrefix(m.TrustDomain)) + "ns/[^/]+/svc/[^/]+/site/" + regexp.QuoteMeta(site) + "$",
		}}
	} else if prefix, ok := strings.CutSuffix(id, "*"); ok {
		sm.MatchPattern = &matcherv3.StringMatcher_Prefix{Prefix: prefix}
	}
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_Authenticated_{Authenticated: &rbacv3.Principal_Authenticated{
		PrincipalName: sm,
	}}}
}

// rbacHTTPFilter is the inbound HTTP authorization filter, or nil.
func rbacHTTPFilter(m *ir.Mesh, s *ir.Service) *hcmv3.HttpFilter {
	if !m.MTLS {
		return nil
	}
	return &hcmv3.HttpFilter{
		Name:       wellknown.HTTPRoleBasedAccessControl,
		ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&rbachttpv3.RBAC{Rules: rbacPolicy(m, s.Authz)})},
	}
}

// rbacNetworkFilter is the inbound TCP authorization filter, or nil.
func rbacNetworkFilter(m *ir.Mesh, s *ir.Service) *listenerv3.Filter {
	if !m.MTLS {
		return nil
	}
	return &listenerv3.Filter{
		Name: wellknown.RoleBasedAccessControl,
		ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(&rbacnetv3.RBAC{
			StatPrefix: "inbound_rbac", Rules: rbacPolicy(m, s.Authz),
		})},
	}
}
