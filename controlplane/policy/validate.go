package policy

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"medmesh/api/v1alpha1"
	"medmesh/controlplane/ir"
	"medmesh/registry"
)

// The checks here repeat what the CRD schema enforces, because file-mode
// objects never meet an API server, and add what a schema cannot check.
// Every error carries the field path (spec.rules[0].timeout).

// problem is why an object is not accepted: the condition reason and the
// field errors behind it.
type problem struct {
	reason string
	errs   field.ErrorList
}

func (p *problem) add(reason string, err *field.Error) {
	if p.reason == "" || p.reason == v1alpha1.ReasonServiceNotFound || p.reason == v1alpha1.ReasonSubsetNotFound {
		// A wrong field outranks a missing service as the reason.
		p.reason = reason
	}
	p.errs = append(p.errs, err)
}

func (p *problem) ok() bool { return len(p.errs) == 0 }

// env is what validation checks objects against.
type env struct {
	cat      *registry.Catalog
	defaults ir.Defaults
}

func (e *env) service(p *problem, path *field.Path, name v1alpha1.ServiceName, needHTTP bool) {
	if errs := validation.IsDNS1123Label(string(name)); len(errs) > 0 {
		p.add(v1alpha1.ReasonInvalid, field.Invalid(path, name, strings.Join(errs, "; ")))
		return
	}
	svc, ok := e.cat.Service(string(name))
	if !ok {
		p.add(v1alpha1.ReasonServiceNotFound, field.NotFound(path, name))
		return
	}
	if needHTTP && !svc.Protocol.IsHTTP() {
		p.add(v1alpha1.ReasonInvalid, field.Invalid(path, name, "is a TCP service; this needs an HTTP or gRPC service"))
	}
}

func duration(p *problem, path *field.Path, d *metav1.Duration, allowZero bool) *time.Duration {
	if d == nil {
		return nil
	}
	switch {
	case d.Duration < 0:
		p.add(v1alpha1.ReasonInvalid, field.Invalid(path, d.Duration.String(), "must not be negative"))
	case d.Duration == 0 && !allowZero:
		p.add(v1alpha1.ReasonInvalid, field.Invalid(path, d.Duration.String(), "must be positive"))
	}
	v := d.Duration
	return &v
}

func between(p *problem, path *field.Path, v, lo, hi int64) {
	if v < lo || v > hi {
		p.add(v1alpha1.ReasonInvalid, field.Invalid(path, v, fmt.Sprintf("must be between %d and %d", lo, hi)))
	}
}

func regex(p *problem, path *field.Path, re string) {
	// Go's regexp implements RE2 syntax, which is what Envoy and grpc-go
	// compile; a regex Go refuses would be NACKed by every proxy.
	if _, err := regexp.Compile(re); err != nil {
		p.add(v1alpha1.ReasonInvalid, field.Invalid(path, re, "not a valid RE2 regular expression: "+err.Error()))
	}
}

var methods = []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}

func method(p *problem, path *field.Path, m string) {
	if !slices.Contains(methods, m) {
		p.add(v1alpha1.ReasonInvalid, field.NotSupported(path, m, methods))
	}
}

// subset checks a subset's selector and that some registered instance
// of the service (healthy or not) matches it.
func (e *env) subset(p *problem, path *field.Path, service v1alpha1.ServiceName, s v1alpha1.Subset) {
	if len(s) > 4 {
		p.add(v1alpha1.ReasonInvalid, field.TooMany(path, len(s), 4))
	}
	for k := range s {
		if k == "" {
			p.add(v1alpha1.ReasonInvalid, field.Invalid(path, k, "keys must not be empty"))
		}
	}
	svc, ok := e.cat.Service(string(service))
	if !ok || len(s) == 0 {
		return // a missing service is reported on its own field
	}
	for _, in := range svc.Instances {
		if matches(in.Meta, s) {
			return
		}
	}
	p.add(v1alpha1.ReasonSubsetNotFound, field.NotFound(path, fmt.Sprintf("no instance of %q has meta %s", service, selector(s))))
}

func matches(meta map[string]string, s v1alpha1.Subset) bool {
	for k, v := range s {
		if meta[k] != v {
			return false
		}
	}
	return true
}

func selector(s v1alpha1.Subset) string {
	keys := make([]string, 0, len(s))
	for k := range s {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + s[k]
	}
	return strings.Join(parts, ",")
}

// route validates a MeshRoute and converts it.
func (e *env) route(r *v1alpha1.MeshRoute) (ir.RoutePolicy, problem) {
	var p problem
	spec := field.NewPath("spec")
	e.service(&p, spec.Child("service"), r.Spec.Service, true)
	out := ir.RoutePolicy{Service: string(r.Spec.Service)}
	if len(r.Spec.Rules) == 0 {
		p.add(v1alpha1.ReasonInvalid, field.Required(spec.Child("rules"), "at least one rule"))
	}
	if len(r.Spec.Rules) > 32 {
		p.add(v1alpha1.ReasonInvalid, field.TooMany(spec.Child("rules"), len(r.Spec.Rules), 32))
	}
	seen := map[string]bool{}
	for i := range r.Spec.Rules {
		rule := &r.Spec.Rules[i]
		path := spec.Child("rules").Index(i)
		name := rule.Name
		if name == "" {
			name = fmt.Sprintf("rule-%d", i)
		} else if seen[name] {
			p.add(v1alpha1.ReasonInvalid, field.Duplicate(path.Child("name"), name))
		}
		seen[name] = true
		ir := e.rule(&p, path, r, rule)
		ir.Name = fmt.Sprintf("%s/%s/%s", keyOf("", &r.ObjectMeta).Namespace, r.Name, name)
		out.Rules = append(out.Rules, ir)
	}
	return out, p
}

func (e *env) rule(p *problem, path *field.Path, r *v1alpha1.MeshRoute, rule *v1alpha1.RouteRule) ir.RoutePolicyRule {
	var out ir.RoutePolicyRule
	if m := rule.Match; m != nil {
		out.Match = match(p, path.Child("match"), m)
	}
	dpath := path.Child("destinations")
	if n := len(rule.Destinations); n == 0 || n > 8 {
		p.add(v1alpha1.ReasonInvalid, field.Invalid(dpath, n, "want 1 to 8 destinations"))
	}
	var total int64
	for i, d := range rule.Destinations {
		svc := d.Service
		if svc == "" {
			svc = r.Spec.Service
		} else {
			e.service(p, dpath.Index(i).Child("service"), svc, true)
		}
		e.subset(p, dpath.Index(i).Child("subset"), svc, d.Subset)
		w := int64(1)
		if d.Weight != nil {
			w = int64(*d.Weight)
			between(p, dpath.Index(i).Child("weight"), w, 0, 10000)
		}
		total += w
		out.Destinations = append(out.Destinations, ir.Destination{Service: string(svc), Subset: d.Subset, Weight: uint32(max(w, 0))})
	}
	if len(rule.Destinations) > 0 && total <= 0 {
		p.add(v1alpha1.ReasonInvalid, field.Invalid(dpath, total, "weights sum to zero: the rule would send its requests nowhere"))
	}
	out.Timeout = duration(p, path.Child("timeout"), rule.Timeout, true)
	if rt := rule.Retries; rt != nil {
		rp := path.Child("retries")
		between(p, rp.Child("attempts"), int64(rt.Attempts), 0, 10)
		o := &ir.RetryOverride{Attempts: uint32(max(rt.Attempts, 0))}
		o.PerTryTimeout = duration(p, rp.Child("perTryTimeout"), rt.PerTryTimeout, false)
		for i, c := range rt.RetryOn {
			if !slices.Contains(retryOns, string(c)) {
				p.add(v1alpha1.ReasonInvalid, field.NotSupported(rp.Child("retryOn").Index(i), c, retryOns))
			}
			o.RetryOn = append(o.RetryOn, string(c))
		}
		if b := rt.Backoff; b != nil {
			o.BackoffBase = duration(p, rp.Child("backoff", "base"), b.Base, false)
			o.BackoffMax = duration(p, rp.Child("backoff", "max"), b.Max, false)
			if o.BackoffBase != nil && o.BackoffMax != nil && *o.BackoffBase > *o.BackoffMax {
				p.add(v1alpha1.ReasonInvalid, field.Invalid(rp.Child("backoff", "base"), o.BackoffBase.String(), "must not exceed max"))
			}
		}
		out.Retry = o
	}
	if f := rule.Fault; f != nil {
		out.Fault = fault(p, path.Child("fault"), f)
	}
	if m := rule.Mirror; m != nil {
		mp := path.Child("mirror")
		svc := m.Service
		if svc == "" {
			svc = r.Spec.Service
		} else {
			e.service(p, mp.Child("service"), svc, true)
		}
		e.subset(p, mp.Child("subset"), svc, m.Subset)
		pct := int64(100)
		if m.Percent != nil {
			pct = int64(*m.Percent)
			between(p, mp.Child("percent"), pct, 0, 100)
		}
		out.Mirror = &ir.Mirror{Service: string(svc), Subset: m.Subset, Percent: uint32(max(pct, 0))}
	}
	return out
}

var retryOns = []string{"5xx", "gateway-error", "reset", "connect-failure", "retriable-4xx", "refused-stream",
	"cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable"}

func match(p *problem, path *field.Path, m *v1alpha1.RouteMatch) ir.RouteMatch {
	var out ir.RouteMatch
	if pm := m.Path; pm != nil {
		pp := path.Child("path")
		if pm.Value == "" {
			p.add(v1alpha1.ReasonInvalid, field.Required(pp.Child("value"), ""))
		}
		switch pm.Type {
		case v1alpha1.MatchPrefix, "":
			out.PathPrefix = pm.Value
		case v1alpha1.MatchExact:
			out.PathExact = pm.Value
		case v1alpha1.MatchRegex:
			regex(p, pp.Child("value"), pm.Value)
			out.PathRegex = pm.Value
		default:
			p.add(v1alpha1.ReasonInvalid, field.NotSupported(pp.Child("type"), pm.Type, []string{"Exact", "Prefix", "RegularExpression"}))
		}
		if pm.Type != v1alpha1.MatchRegex && pm.Value != "" && !strings.HasPrefix(pm.Value, "/") {
			p.add(v1alpha1.ReasonInvalid, field.Invalid(pp.Child("value"), pm.Value, "an Exact or Prefix path starts with /"))
		}
	}
	for i, h := range m.Headers {
		hp := path.Child("headers").Index(i)
		if h.Name == "" {
			p.add(v1alpha1.ReasonInvalid, field.Required(hp.Child("name"), ""))
		}
		hm := ir.HeaderMatch{Name: strings.ToLower(h.Name)}
		switch h.Type {
		case v1alpha1.MatchExact, "":
			hm.Exact = h.Value
		case v1alpha1.MatchPrefix:
			hm.Prefix = h.Value
		case v1alpha1.MatchRegex:
			regex(p, hp.Child("value"), h.Value)
			hm.Regex = h.Value
		case v1alpha1.MatchPresent:
			hm.Present = true
		default:
			p.add(v1alpha1.ReasonInvalid, field.NotSupported(hp.Child("type"), h.Type, []string{"Exact", "Prefix", "RegularExpression", "Present"}))
		}
		if h.Type != v1alpha1.MatchPresent && h.Value == "" {
			p.add(v1alpha1.ReasonInvalid, field.Required(hp.Child("value"), "required unless type is Present"))
		}
		out.Headers = append(out.Headers, hm)
	}
	if m.Method != "" {
		method(p, path.Child("method"), m.Method)
		out.Method = m.Method
	}
	return out
}

func fault(p *problem, path *field.Path, f *v1alpha1.Fault) *ir.Fault {
	if f.Delay == nil && f.Abort == nil {
		p.add(v1alpha1.ReasonInvalid, field.Required(path, "give delay, abort or both"))
		return nil
	}
	out := &ir.Fault{}
	if d := f.Delay; d != nil {
		duration(p, path.Child("delay", "duration"), &d.Duration, false)
		between(p, path.Child("delay", "percent"), int64(d.Percent), 0, 100)
		out.Delay, out.DelayPercent = d.Duration.Duration, uint32(max(d.Percent, 0))
	}
	if a := f.Abort; a != nil {
		ap := path.Child("abort")
		between(p, ap.Child("percent"), int64(a.Percent), 0, 100)
		out.AbortPercent = uint32(max(a.Percent, 0))
		switch {
		case (a.HTTPStatus == nil) == (a.GRPCStatus == nil):
			p.add(v1alpha1.ReasonInvalid, field.Invalid(ap, "", "give exactly one of httpStatus and grpcStatus"))
		case a.HTTPStatus != nil:
			between(p, ap.Child("httpStatus"), int64(*a.HTTPStatus), 200, 599)
			out.HTTPStatus = uint32(max(*a.HTTPStatus, 0))
		default:
			between(p, ap.Child("grpcStatus"), int64(*a.GRPCStatus), 1, 16)
			g := uint32(max(*a.GRPCStatus, 0))
			out.GRPCStatus = &g
		}
	}
	return out
}

var lbPolicies = map[v1alpha1.LBAlgorithm]ir.LBPolicy{
	v1alpha1.LBRoundRobin: ir.LBRoundRobin, v1alpha1.LBLeastRequest: ir.LBLeastRequest,
	v1alpha1.LBRingHash: ir.LBRingHash, v1alpha1.LBMaglev: ir.LBMaglev, v1alpha1.LBRandom: ir.LBRandom,
}

// destination validates a MeshDestination and converts it.
func (e *env) destination(d *v1alpha1.MeshDestination) (ir.DestinationPolicy, problem) {
	var p problem
	spec := field.NewPath("spec")
	e.service(&p, spec.Child("service"), d.Spec.Service, false)
	out := ir.DestinationPolicy{Service: string(d.Spec.Service)}
	if lb := d.Spec.LoadBalancer; lb != nil {
		lp := spec.Child("loadBalancer")
		pol, ok := lbPolicies[lb.Algorithm]
		if !ok {
			p.add(v1alpha1.ReasonInvalid, field.NotSupported(lp.Child("algorithm"), lb.Algorithm,
				[]string{"RoundRobin", "LeastRequest", "RingHash", "Maglev", "Random"}))
		}
		l := ir.LoadBalancer{Policy: pol}
		switch {
		case lb.ChoiceCount != nil && lb.Algorithm != v1alpha1.LBLeastRequest:
			p.add(v1alpha1.ReasonInvalid, field.Forbidden(lp.Child("choiceCount"), "is for LeastRequest"))
		case (lb.MinRingSize != nil || lb.MaxRingSize != nil) && lb.Algorithm != v1alpha1.LBRingHash:
			p.add(v1alpha1.ReasonInvalid, field.Forbidden(lp.Child("minRingSize"), "minRingSize and maxRingSize are for RingHash"))
		}
		if pol == ir.LBLeastRequest {
			l.ChoiceCount = 2
			if lb.ChoiceCount != nil {
				between(&p, lp.Child("choiceCount"), int64(*lb.ChoiceCount), 2, 16)
				l.ChoiceCount = uint32(max(*lb.ChoiceCount, 0))
			}
		}
		if pol == ir.LBRingHash {
			l.MinRingSize, l.MaxRingSize = 1024, 8*1024*1024
			if lb.MinRingSize != nil {
				between(&p, lp.Child("minRingSize"), *lb.MinRingSize, 1, 8*1024*1024)
				l.MinRingSize = uint64(max(*lb.MinRingSize, 0))
			}
			if lb.MaxRingSize != nil {
				between(&p, lp.Child("maxRingSize"), *lb.MaxRingSize, 1, 8*1024*1024)
				l.MaxRingSize = uint64(max(*lb.MaxRingSize, 0))
			}
			if l.MinRingSize > l.MaxRingSize {
				p.add(v1alpha1.ReasonInvalid, field.Invalid(lp.Child("minRingSize"), l.MinRingSize, "must not exceed maxRingSize"))
			}
		}
		out.LB = &l
	}
	if n := len(d.Spec.LocalityFailover); n > 8 {
		p.add(v1alpha1.ReasonInvalid, field.TooMany(spec.Child("localityFailover"), n, 8))
	}
	for i, l := range d.Spec.LocalityFailover {
		// An entry names a region, a site (edge sites are known by site
		// alone) or both; one naming neither is a mistake, not a wildcard.
		lp := spec.Child("localityFailover").Index(i)
		if l.Region == "" && l.Site == "" {
			p.add(v1alpha1.ReasonInvalid, field.Required(lp, "a region or a site is required"))
		}
		if l.Zone != "" && l.Region == "" {
			p.add(v1alpha1.ReasonInvalid, field.Forbidden(lp.Child("zone"), "zone needs a region: a zone only means something inside one"))
		}
		out.Failover = append(out.Failover, ir.Locality{Region: l.Region, Zone: l.Zone, Site: l.Site})
	}
	if cb := d.Spec.CircuitBreaker; cb != nil {
		cp := spec.Child("circuitBreaker")
		c := e.defaults.CircuitBreaker
		positive := func(name string, v *int32, dst *uint32) {
			if v != nil {
				between(&p, cp.Child(name), int64(*v), 1, 1<<31-1)
				*dst = uint32(max(*v, 0))
			}
		}
		positive("maxConnections", cb.MaxConnections, &c.MaxConnections)
		positive("maxPendingRequests", cb.MaxPendingRequests, &c.MaxPendingRequests)
		positive("maxRequests", cb.MaxRequests, &c.MaxRequests)
		if cb.MaxRetryPercent != nil {
			between(&p, cp.Child("maxRetryPercent"), int64(*cb.MaxRetryPercent), 0, 100)
			c.RetryBudgetPercent = float64(*cb.MaxRetryPercent)
		}
		out.CircuitBreaker = &c
	}
	if od := d.Spec.OutlierDetection; od != nil {
		op := spec.Child("outlierDetection")
		o := e.defaults.Outlier
		count := func(name string, v *int32, dst *uint32, hi int64) {
			if v != nil {
				between(&p, op.Child(name), int64(*v), 0, hi)
				*dst = uint32(max(*v, 0))
			}
		}
		count("consecutive5xx", od.Consecutive5xx, &o.Consecutive5xx, 1<<31-1)
		count("consecutiveGatewayFailure", od.ConsecutiveGatewayFailure, &o.ConsecutiveGatewayFailure, 1<<31-1)
		count("maxEjectionPercent", od.MaxEjectionPercent, &o.MaxEjectionPercent, 100)
		if v := duration(&p, op.Child("interval"), od.Interval, false); v != nil {
			o.Interval = *v
		}
		if v := duration(&p, op.Child("baseEjectionTime"), od.BaseEjectionTime, false); v != nil {
			o.BaseEjectionTime = *v
		}
		out.Outlier = &o
	}
	if cp := d.Spec.ConnectionPool; cp != nil {
		pp := spec.Child("connectionPool")
		out.ConnectTimeout = duration(&p, pp.Child("connectTimeout"), cp.ConnectTimeout, false)
		if v := cp.MaxRequestsPerConnection; v != nil {
			between(&p, pp.Child("maxRequestsPerConnection"), int64(*v), 1, 1<<31-1)
			out.MaxRequestsPerConnection = uint32(max(*v, 0))
		}
	}
	if t := d.Spec.TLS; t != nil {
		tp := spec.Child("tls", "mode")
		switch t.Mode {
		case v1alpha1.TLSStrict:
			out.Permissive = new(false)
		case v1alpha1.TLSPermissive:
			if svc, ok := e.cat.Service(string(d.Spec.Service)); ok && svc.PHI {
				p.add(v1alpha1.ReasonInvalid, field.Forbidden(tp, "Permissive is refused for a PHI service: plaintext would carry patient data"))
			}
			out.Permissive = new(true)
		default:
			p.add(v1alpha1.ReasonInvalid, field.NotSupported(tp, t.Mode, []string{"Strict", "Permissive"}))
		}
	}
	return out, p
}

// access validates a MeshAccess and converts it.
func (e *env) access(a *v1alpha1.MeshAccess) (ir.AccessPolicy, problem) {
	var p problem
	spec := field.NewPath("spec")
	e.service(&p, spec.Child("service"), a.Spec.Service, len(a.Spec.To) > 0)
	key := keyOf(v1alpha1.KindMeshAccess, &a.ObjectMeta)
	out := ir.AccessPolicy{Name: key.Namespace + "/" + key.Name, Service: string(a.Spec.Service)}
	switch a.Spec.Action {
	case v1alpha1.ActionAllow:
		out.Allow = true
	case v1alpha1.ActionDeny:
	default:
		p.add(v1alpha1.ReasonInvalid, field.NotSupported(spec.Child("action"), a.Spec.Action, []string{"Allow", "Deny"}))
	}
	if len(a.Spec.From) == 0 {
		p.add(v1alpha1.ReasonInvalid, field.Required(spec.Child("from"), "at least one caller"))
	}
	for i, c := range a.Spec.From {
		cp := spec.Child("from").Index(i)
		switch {
		case (c.Service == "") == (c.SpiffeID == ""):
			p.add(v1alpha1.ReasonInvalid, field.Invalid(cp, "", "give exactly one of service and spiffeID"))
		case c.Service != "":
			// Like intentions, a caller that is not registered (yet) is
			// kept: it applies when the service appears.
			if errs := validation.IsDNS1123Label(string(c.Service)); len(errs) > 0 {
				p.add(v1alpha1.ReasonInvalid, field.Invalid(cp.Child("service"), c.Service, strings.Join(errs, "; ")))
			}
			out.Services = append(out.Services, string(c.Service))
		default:
			if _, err := spiffeid.FromString(c.SpiffeID); err != nil {
				p.add(v1alpha1.ReasonInvalid, field.Invalid(cp.Child("spiffeID"), c.SpiffeID, err.Error()))
			}
			out.SpiffeIDs = append(out.SpiffeIDs, c.SpiffeID)
		}
	}
	for i, op := range a.Spec.To {
		tp := spec.Child("to").Index(i)
		if len(op.Paths) == 0 && len(op.Methods) == 0 {
			p.add(v1alpha1.ReasonInvalid, field.Required(tp, "give paths, methods or both"))
		}
		for j, path := range op.Paths {
			if !strings.HasPrefix(path, "/") || strings.ContainsAny(strings.TrimSuffix(path, "*"), "*?#") {
				p.add(v1alpha1.ReasonInvalid, field.Invalid(tp.Child("paths").Index(j), path,
					`want an absolute path, optionally ending in "*"`))
			}
		}
		for j, m := range op.Methods {
			method(&p, tp.Child("methods").Index(j), m)
		}
		out.To = append(out.To, ir.Operation{Paths: op.Paths, Methods: op.Methods})
	}
	return out, p
}
