package translate

import (
	"strings"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"medmesh/controlplane/ir"
)

// Access policies (MeshAccess) extend the intentions' RBAC in the same
// single ALLOW filter, so the HTTP filter chain (hcm.go) is unchanged and
// grpc-go, which evaluates RBAC the same way, agrees with Envoy:
//
//   - an Allow rule is one more policy: its callers, for its operations;
//   - Deny rules are folded into every policy's principals as
//     "and not (caller and operation)". Envoy's principals can match the
//     request path and headers too, which is what lets a deny name both
//     who and what inside an ALLOW filter.

func addAccessRules(m *ir.Mesh, rules *rbacv3.RBAC, access []ir.AccessRule) {
	var deny []*rbacv3.Principal
	for _, r := range access {
		if r.Allow {
			if rules.Policies == nil {
				rules.Policies = map[string]*rbacv3.Policy{}
			}
			rules.Policies["access/"+r.Name] = &rbacv3.Policy{
				Permissions: []*rbacv3.Permission{operationsPermission(r.To)},
				Principals:  []*rbacv3.Principal{callers(m, r.Principals)},
			}
			continue
		}
		p := callers(m, r.Principals)
		if op := operationsPrincipal(r.To); op != nil {
			p = andPrincipals(p, op)
		}
		deny = append(deny, p)
	}
	if len(deny) == 0 {
		return
	}
	notDenied := &rbacv3.Principal{Identifier: &rbacv3.Principal_NotId{NotId: orPrincipals(deny)}}
	for _, pol := range rules.Policies {
		pol.Principals = []*rbacv3.Principal{andPrincipals(orPrincipals(pol.Principals), notDenied)}
	}
}

func callers(m *ir.Mesh, ids []string) *rbacv3.Principal {
	ps := make([]*rbacv3.Principal, len(ids))
	for i, id := range ids {
		ps[i] = principalExact(m, id)
	}
	return orPrincipals(ps)
}

func orPrincipals(ps []*rbacv3.Principal) *rbacv3.Principal {
	if len(ps) == 1 {
		return ps[0]
	}
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_OrIds{OrIds: &rbacv3.Principal_Set{Ids: ps}}}
}

func andPrincipals(ps ...*rbacv3.Principal) *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_AndIds{AndIds: &rbacv3.Principal_Set{Ids: ps}}}
}

// operationsPermission matches any of the operations; none: anything.
func operationsPermission(ops []ir.Operation) *rbacv3.Permission {
	if len(ops) == 0 {
		return &rbacv3.Permission{Rule: &rbacv3.Permission_Any{Any: true}}
	}
	var any []*rbacv3.Permission
	for _, op := range ops {
		var all []*rbacv3.Permission
		if len(op.Paths) > 0 {
			var paths []*rbacv3.Permission
			for _, p := range op.Paths {
				paths = append(paths, &rbacv3.Permission{Rule: &rbacv3.Permission_UrlPath{UrlPath: pathMatcher(p)}})
			}
			all = append(all, &rbacv3.Permission{Rule: &rbacv3.Permission_OrRules{OrRules: &rbacv3.Permission_Set{Rules: paths}}})
		}
		if len(op.Methods) > 0 {
			var ms []*rbacv3.Permission
			for _, m := range op.Methods {
				ms = append(ms, &rbacv3.Permission{Rule: &rbacv3.Permission_Header{Header: methodHeader(m)}})
			}
			all = append(all, &rbacv3.Permission{Rule: &rbacv3.Permission_OrRules{OrRules: &rbacv3.Permission_Set{Rules: ms}}})
		}
		any = append(any, &rbacv3.Permission{Rule: &rbacv3.Permission_AndRules{AndRules: &rbacv3.Permission_Set{Rules: all}}})
	}
	return &rbacv3.Permission{Rule: &rbacv3.Permission_OrRules{OrRules: &rbacv3.Permission_Set{Rules: any}}}
}

// operationsPrincipal is operationsPermission in principal form (for
// deny rules); nil when there are no operations.
func operationsPrincipal(ops []ir.Operation) *rbacv3.Principal {
	if len(ops) == 0 {
		return nil
	}
	var any []*rbacv3.Principal
	for _, op := range ops {
		var all []*rbacv3.Principal
		if len(op.Paths) > 0 {
			var paths []*rbacv3.Principal
			for _, p := range op.Paths {
				paths = append(paths, &rbacv3.Principal{Identifier: &rbacv3.Principal_UrlPath{UrlPath: pathMatcher(p)}})
			}
			all = append(all, orPrincipals(paths))
		}
		if len(op.Methods) > 0 {
			var ms []*rbacv3.Principal
			for _, m := range op.Methods {
				ms = append(ms, &rbacv3.Principal{Identifier: &rbacv3.Principal_Header{Header: methodHeader(m)}})
			}
			all = append(all, orPrincipals(ms))
		}
		any = append(any, andPrincipals(all...))
	}
	return orPrincipals(any)
}

// pathMatcher: "/fhir/Patient/*" is a prefix, anything else exact.
func pathMatcher(p string) *matcherv3.PathMatcher {
	sm := &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: p}}
	if prefix, ok := strings.CutSuffix(p, "*"); ok {
		sm.MatchPattern = &matcherv3.StringMatcher_Prefix{Prefix: prefix}
	}
	return &matcherv3.PathMatcher{Rule: &matcherv3.PathMatcher_Path{Path: sm}}
}

func methodHeader(m string) *routev3.HeaderMatcher {
	return &routev3.HeaderMatcher{Name: ":method", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{
		StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: m}}}}
}
