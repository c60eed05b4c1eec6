package ir

import (
	"maps"
	"net"
	"slices"
	"sort"
	"strings"
	"time"
)

// Policies are operators' accepted policies in plain form: already
// validated and conflict-free (controlplane/policy does that and reports
// what it refused), so applying them cannot fail. At most one route and
// one destination policy per service.
type Policies struct {
	Routes       []RoutePolicy       `json:"routes,omitempty"`
	Destinations []DestinationPolicy `json:"destinations,omitempty"`
	Access       []AccessPolicy      `json:"access,omitempty"`
}

// RoutePolicy routes the calls to one service.
type RoutePolicy struct {
	Service string            `json:"service"`
	Rules   []RoutePolicyRule `json:"rules"`
}

// RoutePolicyRule is one rule as the operator wrote it; nil settings keep
// the service's defaults.
type RoutePolicyRule struct {
	Name         string         `json:"name"` // unique within the policy
	Match        RouteMatch     `json:"match"`
	Destinations []Destination  `json:"destinations"`
	Timeout      *time.Duration `json:"timeout,omitempty"`
	Retry        *RetryOverride `json:"retry,omitempty"`
	Fault        *Fault         `json:"fault,omitempty"`
	Mirror       *Mirror        `json:"mirror,omitempty"`
}

// RetryOverride replaces parts of a service's default retry policy.
type RetryOverride struct {
	Attempts      uint32         `json:"attempts"`
	PerTryTimeout *time.Duration `json:"perTryTimeout,omitempty"`
	RetryOn       []string       `json:"retryOn,omitempty"`
	BackoffBase   *time.Duration `json:"backoffBase,omitempty"`
	BackoffMax    *time.Duration `json:"backoffMax,omitempty"`
}

// DestinationPolicy configures how callers treat one service.
type DestinationPolicy struct {
	Service                  string          `json:"service"`
	LB                       *LoadBalancer   `json:"lb,omitempty"`
	Failover                 []Locality      `json:"failover,omitempty"`
	CircuitBreaker           *CircuitBreaker `json:"circuitBreaker,omitempty"` // fully resolved
	Outlier                  *Outlier        `json:"outlier,omitempty"`        // fully resolved
	ConnectTimeout           *time.Duration  `json:"connectTimeout,omitempty"`
	MaxRequestsPerConnection uint32          `json:"maxRequestsPerConnection,omitempty"`
	// Permissive: nil keeps the catalog's mode.
	Permissive *bool `json:"permissive,omitempty"`
}

// AccessPolicy allows or denies callers of a service.
type AccessPolicy struct {
	Name    string `json:"name"` // namespace/name, for RBAC policy names
	Service string `json:"service"`
	Allow   bool   `json:"allow"`
	// Services and SpiffeIDs are the callers.
	Services  []string `json:"services,omitempty"`
	SpiffeIDs []string `json:"spiffeIds,omitempty"`
	// To narrows it to some calls (any of them); empty: every call.
	To []Operation `json:"to,omitempty"`
}

// Operation is any of Paths (exact, or a prefix when ending in "*") with
// any of Methods; an empty list matches anything.
type Operation struct {
	Paths   []string `json:"paths,omitempty"`
	Methods []string `json:"methods,omitempty"`
}

// AccessRule is an access policy resolved to SPIFFE IDs.
type AccessRule struct {
	Name       string      `json:"name"`
	Allow      bool        `json:"allow"`
	Principals []string    `json:"principals"`
	To         []Operation `json:"to,omitempty"`
}

// ServicePolicy is what policies add to a service, resolved.
type ServicePolicy struct {
	// Rules come before the service's default route, in order.
	Rules []RouteRule `json:"rules,omitempty"`
	// Subsets are the instance subsets routes send to; each is a cluster.
	Subsets []Subset `json:"subsets,omitempty"`
	// Failover orders localities (priority 0 first); empty: one priority.
	Failover []Locality `json:"failover,omitempty"`
	// MaxRequestsPerConnection: 0 is unlimited.
	MaxRequestsPerConnection uint32 `json:"maxRequestsPerConnection,omitempty"`
	// HasFault says a rule injects faults, so listeners carry the filter.
	HasFault bool `json:"hasFault,omitempty"`
}

// RouteMatch selects requests; empty fields match anything.
type RouteMatch struct {
	PathExact  string        `json:"pathExact,omitempty"`
	PathPrefix string        `json:"pathPrefix,omitempty"`
	PathRegex  string        `json:"pathRegex,omitempty"`
	Headers    []HeaderMatch `json:"headers,omitempty"`
	Method     string        `json:"method,omitempty"`
}

// HeaderMatch matches one header: exactly one of the fields is set.
type HeaderMatch struct {
	Name    string `json:"name"`
	Exact   string `json:"exact,omitempty"`
	Prefix  string `json:"prefix,omitempty"`
	Regex   string `json:"regex,omitempty"`
	Present bool   `json:"present,omitempty"`
}

// Destination is a share of a rule's traffic.
type Destination struct {
	Service string            `json:"service"`
	Subset  map[string]string `json:"subset,omitempty"`
	Weight  uint32            `json:"weight"`
}

// RouteRule is a policy rule resolved against the service's defaults.
type RouteRule struct {
	Name     string           `json:"name"`
	Match    RouteMatch       `json:"match"`
	Clusters []WeightedTarget `json:"clusters"` // weight > 0 only
	Timeout  time.Duration    `json:"timeout"`
	Retry    Retry            `json:"retry"`
	Fault    *Fault           `json:"fault,omitempty"`
	Mirror   *MirrorTarget    `json:"mirror,omitempty"`
}

// WeightedTarget is a cluster and its share.
type WeightedTarget struct {
	Cluster string `json:"cluster"`
	Weight  uint32 `json:"weight"`
}

// Fault injects delays and aborts; percents are 0-100.
type Fault struct {
	DelayPercent uint32        `json:"delayPercent,omitempty"`
	Delay        time.Duration `json:"delay,omitempty"`
	AbortPercent uint32        `json:"abortPercent,omitempty"`
	HTTPStatus   uint32        `json:"httpStatus,omitempty"`
	GRPCStatus   *uint32       `json:"grpcStatus,omitempty"`
}

// Mirror copies requests to a service (subset).
type Mirror struct {
	Service string            `json:"service"`
	Subset  map[string]string `json:"subset,omitempty"`
	Percent uint32            `json:"percent"`
}

// MirrorTarget is a resolved mirror.
type MirrorTarget struct {
	Cluster string `json:"cluster"`
	Percent uint32 `json:"percent"`
}

// Subset is the instances of a service whose meta match a selector.
type Subset struct {
	// Cluster is the subset's cluster name, SubsetCluster(service, selector).
	Cluster    string              `json:"cluster"`
	Selector   map[string]string   `json:"selector"`
	Localities []LocalityEndpoints `json:"localities"`
}

// SubsetCluster names a subset's cluster: "emr|version=v2". "|" cannot be
// in a service name, so it never collides with a service's cluster.
func SubsetCluster(service string, selector map[string]string) string {
	if len(selector) == 0 {
		return service
	}
	keys := slices.Sorted(maps.Keys(selector))
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + selector[k]
	}
	return service + "|" + strings.Join(parts, ",")
}

// applyPolicies adds accepted policies to the mesh. Policies naming
// services that are not in the mesh are skipped (controlplane/policy
// reports them before they get here).
func (m *Mesh) applyPolicies(p *Policies) {
	if p == nil {
		return
	}
	for _, d := range p.Destinations {
		if svc, ok := m.Service(d.Service); ok {
			svc.applyDestination(d)
		}
	}
	// Subsets are built after destinations, whose failover they inherit.
	for _, r := range p.Routes {
		svc, ok := m.Service(r.Service)
		if !ok {
			continue
		}
		for _, rule := range r.Rules {
			svc.Policy.Rules = append(svc.Policy.Rules, m.resolveRule(svc, rule))
			if rule.Fault != nil {
				svc.Policy.HasFault = true
			}
		}
	}
	for _, a := range p.Access {
		svc, ok := m.Service(a.Service)
		if !ok {
			continue
		}
		rule := AccessRule{Name: a.Name, Allow: a.Allow, To: a.To}
		rule.Principals = append(rule.Principals, a.SpiffeIDs...)
		for _, caller := range a.Services {
			ns := "default"
			if c, ok := m.Service(caller); ok {
				ns = c.Namespace
			}
			rule.Principals = append(rule.Principals, m.serviceID(ns, caller))
		}
		svc.Authz.Rules = append(svc.Authz.Rules, rule)
	}
	for i := range m.Services {
		sort.Slice(m.Services[i].Policy.Subsets, func(a, b int) bool {
			return m.Services[i].Policy.Subsets[a].Cluster < m.Services[i].Policy.Subsets[b].Cluster
		})
	}
}

func (s *Service) applyDestination(d DestinationPolicy) {
	if d.LB != nil {
		s.LB = *d.LB
	}
	if d.CircuitBreaker != nil {
		s.CircuitBreaker = *d.CircuitBreaker
	}
	if d.Outlier != nil {
		s.Outlier = *d.Outlier
	}
	if d.ConnectTimeout != nil {
		s.ConnectTimeout = *d.ConnectTimeout
	}
	if d.Permissive != nil {
		s.Permissive = *d.Permissive && !s.PHI
	}
	s.Policy.MaxRequestsPerConnection = d.MaxRequestsPerConnection
	s.Policy.Failover = d.Failover
}

// resolveRule fills a rule's unset settings from the service's defaults
// and creates the subsets it sends to.
func (m *Mesh) resolveRule(svc *Service, r RoutePolicyRule) RouteRule {
	out := RouteRule{Name: r.Name, Match: r.Match, Timeout: svc.Route.Timeout, Retry: svc.Route.Retry}
	for _, d := range r.Destinations {
		if d.Weight == 0 {
			continue // a paused canary: Envoy and grpc-go want no zero weights
		}
		out.Clusters = append(out.Clusters, WeightedTarget{Cluster: m.target(d.Service, d.Subset), Weight: d.Weight})
	}
	if r.Timeout != nil {
		out.Timeout = *r.Timeout
	}
	if o := r.Retry; o != nil {
		out.Retry.Attempts = o.Attempts
		if o.PerTryTimeout != nil {
			out.Retry.PerTryTimeout = *o.PerTryTimeout
		}
		if len(o.RetryOn) > 0 {
			out.Retry.RetryOn = slices.Clone(o.RetryOn)
		}
		if o.BackoffBase != nil {
			out.Retry.BackoffBase = *o.BackoffBase
		}
		if o.BackoffMax != nil {
			out.Retry.BackoffMax = *o.BackoffMax
		}
		out.Retry.BackoffMax = max(out.Retry.BackoffMax, out.Retry.BackoffBase)
	}
	out.Fault = r.Fault
	if r.Mirror != nil {
		out.Mirror = &MirrorTarget{Cluster: m.target(r.Mirror.Service, r.Mirror.Subset), Percent: r.Mirror.Percent}
	}
	return out
}

// target is the cluster for a service subset, creating the subset on the
// service it selects from.
func (m *Mesh) target(service string, selector map[string]string) string {
	name := SubsetCluster(service, selector)
	if len(selector) == 0 {
		return name
	}
	svc, ok := m.Service(service)
	if !ok {
		return name
	}
	for _, s := range svc.Policy.Subsets {
		if s.Cluster == name {
			return name
		}
	}
	sub := Subset{Cluster: name, Selector: selector, Localities: subsetEndpoints(svc, selector)}
	svc.Policy.Subsets = append(svc.Policy.Subsets, sub)
	return name
}

// subsetEndpoints keeps the service's routable endpoints whose instance
// meta match every selector pair.
func subsetEndpoints(svc *Service, selector map[string]string) []LocalityEndpoints {
	match := map[string]bool{}
	for _, in := range svc.Instances {
		ok := net.ParseIP(in.Address) != nil
		for k, v := range selector {
			if in.Meta[k] != v {
				ok = false
			}
		}
		match[in.ID] = ok
	}
	var out []LocalityEndpoints
	for _, loc := range svc.Localities {
		if loc.Remote {
			continue // subsets select this site's instances
		}
		var eps []Endpoint
		for _, ep := range loc.Endpoints {
			if match[ep.InstanceID] {
				eps = append(eps, ep)
			}
		}
		if len(eps) > 0 {
			out = append(out, LocalityEndpoints{Locality: loc.Locality, Endpoints: eps})
		}
	}
	return out
}

// Priority is the failover priority of a locality: the index of the first
// failover entry it matches, or len(failover) when it matches none.
func Priority(failover []Locality, l Locality) uint32 {
	for i, f := range failover {
		if f.matches(l) {
			return uint32(i)
		}
	}
	return uint32(len(failover))
}

// matches says whether a failover entry takes a locality: every field the
// entry names must be the locality's. A site alone takes the whole site,
// whatever its regions and zones (edge sites are known by site). An entry
// naming neither region nor site takes nothing; validation refuses it.
func (f Locality) matches(l Locality) bool {
	if f.Region == "" && f.Site == "" {
		return false
	}
	return (f.Region == "" || f.Region == l.Region) &&
		(f.Zone == "" || f.Zone == l.Zone) &&
		(f.Site == "" || f.Site == l.Site)
}
