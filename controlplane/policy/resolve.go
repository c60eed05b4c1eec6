package policy

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"medmesh/api/v1alpha1"
	"medmesh/controlplane/ir"
	"medmesh/registry"
)

// Options are Resolve's inputs besides the Set.
type Options struct {
	Catalog  *registry.Catalog
	Defaults ir.Defaults
	// Previous are the statuses of the last Resolve, so a condition that
	// did not change keeps its LastTransitionTime.
	Previous []ObjectStatus
	Now      time.Time
}

// Result is what Resolve decided.
type Result struct {
	Policies *ir.Policies
	// Statuses has one entry per object, sorted by kind, namespace and
	// name.
	Statuses []ObjectStatus
	// Errors are the source's (Set.Errors).
	Errors []string
}

// candidate is a valid object competing for its service.
type candidate struct {
	key     Key
	created metav1.Time
	idx     int
}

// Resolve validates every object against the catalog, settles conflicts
// and returns the accepted policies and every object's status. It is pure.
func Resolve(set *Set, o Options) *Result {
	if set == nil {
		set = &Set{}
	}
	cat := o.Catalog
	if cat == nil {
		cat = &registry.Catalog{}
	}
	e := &env{cat: cat, defaults: o.Defaults}
	prev := map[Key][]metav1.Condition{}
	for _, s := range o.Previous {
		prev[s.Key] = s.Conditions
	}
	res := &Result{Policies: &ir.Policies{}}
	status := func(k Key, m *metav1.ObjectMeta, service string, p *problem, conflict string) {
		st := ObjectStatus{Key: k, Service: service, Generation: m.Generation, Source: m.Annotations[SourceAnnotation]}
		st.Conditions = conditions(prev[k], k, m.Generation, p, conflict, o.Now)
		res.Statuses = append(res.Statuses, st)
	}

	// Routes: one per service, the oldest valid one wins.
	routes := make([]ir.RoutePolicy, len(set.Routes))
	probs := make([]problem, len(set.Routes))
	var cands []candidate
	for i := range set.Routes {
		r := &set.Routes[i]
		routes[i], probs[i] = e.route(r)
		if probs[i].ok() {
			cands = append(cands, candidate{keyOf(v1alpha1.KindMeshRoute, &r.ObjectMeta), r.CreationTimestamp, i})
		}
	}
	winners := settle(cands, func(i int) string { return string(set.Routes[i].Spec.Service) })
	for i := range set.Routes {
		r := &set.Routes[i]
		k := keyOf(v1alpha1.KindMeshRoute, &r.ObjectMeta)
		conflict := winners.lost(i)
		if probs[i].ok() && conflict == "" {
			res.Policies.Routes = append(res.Policies.Routes, routes[i])
		}
		status(k, &r.ObjectMeta, string(r.Spec.Service), &probs[i], conflict)
	}

	// Destinations: the same rule.
	dests := make([]ir.DestinationPolicy, len(set.Destinations))
	probs = make([]problem, len(set.Destinations))
	cands = nil
	for i := range set.Destinations {
		d := &set.Destinations[i]
		dests[i], probs[i] = e.destination(d)
		if probs[i].ok() {
			cands = append(cands, candidate{keyOf(v1alpha1.KindMeshDestination, &d.ObjectMeta), d.CreationTimestamp, i})
		}
	}
	winners = settle(cands, func(i int) string { return string(set.Destinations[i].Spec.Service) })
	for i := range set.Destinations {
		d := &set.Destinations[i]
		conflict := winners.lost(i)
		if probs[i].ok() && conflict == "" {
			res.Policies.Destinations = append(res.Policies.Destinations, dests[i])
		}
		status(keyOf(v1alpha1.KindMeshDestination, &d.ObjectMeta), &d.ObjectMeta, string(d.Spec.Service), &probs[i], conflict)
	}

	// Access policies add up; they never conflict.
	for i := range set.Access {
		a := &set.Access[i]
		pol, p := e.access(a)
		if p.ok() {
			res.Policies.Access = append(res.Policies.Access, pol)
		}
		status(keyOf(v1alpha1.KindMeshAccess, &a.ObjectMeta), &a.ObjectMeta, string(a.Spec.Service), &p, "")
	}
	// Deterministic order whatever order the source listed objects in:
	// policies become xDS resources whose versions are content hashes.
	sort.Slice(res.Policies.Routes, func(i, j int) bool { return res.Policies.Routes[i].Service < res.Policies.Routes[j].Service })
	sort.Slice(res.Policies.Destinations, func(i, j int) bool {
		return res.Policies.Destinations[i].Service < res.Policies.Destinations[j].Service
	})
	sort.Slice(res.Policies.Access, func(i, j int) bool { return res.Policies.Access[i].Name < res.Policies.Access[j].Name })

	res.Errors = set.Errors
	sortStatuses(res.Statuses)
	return res
}

// winners maps a candidate index to the winner it lost to, if any.
type winners map[int]string

func (w winners) lost(i int) string { return w[i] }

// settle picks, per service, the oldest candidate (creationTimestamp,
// then namespace/name) and records for every other whom it lost to.
func settle(cands []candidate, service func(int) string) winners {
	sort.SliceStable(cands, func(i, j int) bool {
		a, b := cands[i], cands[j]
		if !a.created.Equal(&b.created) {
			return a.created.Before(&b.created)
		}
		if a.key.Namespace != b.key.Namespace {
			return a.key.Namespace < b.key.Namespace
		}
		return a.key.Name < b.key.Name
	})
	first := map[string]Key{}
	out := winners{}
	for _, c := range cands {
		svc := service(c.idx)
		if w, ok := first[svc]; ok {
			out[c.idx] = fmt.Sprintf("spec.service: %q is already configured by %s, which is older", svc, w)
			continue
		}
		first[svc] = c.key
	}
	return out
}

// conditions computes an object's conditions, keeping transition times of
// those that did not change.
func conditions(prev []metav1.Condition, k Key, gen int64, p *problem, conflict string, now time.Time) []metav1.Condition {
	var want []metav1.Condition
	switch {
	case !p.ok():
		msgs := make([]string, len(p.errs))
		for i, e := range p.errs {
			msgs[i] = e.Error()
		}
		msg := fmt.Sprintf("%s: %s", k, strings.Join(msgs, "; "))
		want = []metav1.Condition{
			{Type: v1alpha1.ConditionAccepted, Status: metav1.ConditionFalse, Reason: p.reason, Message: msg},
			{Type: v1alpha1.ConditionInvalid, Status: metav1.ConditionTrue, Reason: p.reason, Message: msg},
		}
	case conflict != "":
		want = []metav1.Condition{
			{Type: v1alpha1.ConditionAccepted, Status: metav1.ConditionFalse, Reason: v1alpha1.ReasonConflicted,
				Message: fmt.Sprintf("%s: %s", k, conflict)},
			{Type: v1alpha1.ConditionInvalid, Status: metav1.ConditionFalse, Reason: v1alpha1.ReasonValid, Message: "the object is valid"},
		}
	default:
		want = []metav1.Condition{
			{Type: v1alpha1.ConditionAccepted, Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonAccepted, Message: "in force"},
			{Type: v1alpha1.ConditionInvalid, Status: metav1.ConditionFalse, Reason: v1alpha1.ReasonValid, Message: "the object is valid"},
		}
	}
	for i := range want {
		want[i].ObservedGeneration = gen
	}
	return mergeConditions(prev, want, now)
}

// mergeConditions applies want over prev with meta.SetStatusCondition,
// which moves LastTransitionTime only when a condition's status changes.
func mergeConditions(prev, want []metav1.Condition, now time.Time) []metav1.Condition {
	out := make([]metav1.Condition, 0, len(want))
	for _, c := range prev {
		if meta.FindStatusCondition(want, c.Type) != nil {
			out = append(out, c)
		}
	}
	for _, c := range want {
		if c.LastTransitionTime.IsZero() {
			c.LastTransitionTime = metav1.NewTime(now)
		}
		meta.SetStatusCondition(&out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Type < out[j].Type })
	return out
}
