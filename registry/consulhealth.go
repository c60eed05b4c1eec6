package registry

import (
	"sort"
	"strings"

	"github.com/hashicorp/consul/api"
)

// A health-only change takes a fast path: when a checks answer shows that
// only the statuses of a service's checks moved (no instance or check
// registered or removed since the service was last read), its instances'
// health is recomputed from that answer, without reading the service
// again. That read was a second round trip to Consul for every change,
// on the critical path of the most common change there is.

// fetchedInstance is an instance as last read from Consul's health
// endpoint, with what its health is computed from.
type fetchedInstance struct {
	raw     RawInstance
	weights api.AgentWeights
	checks  string // the instance's own check IDs at the read, sorted
}

// checkIndex groups one answer of the checks watch.
type checkIndex struct {
	own       map[string]api.HealthChecks    // node \x00 service ID -> the instance's own checks
	nodes     map[string]api.HealthChecks    // node -> node-level checks
	instances map[string]map[string]struct{} // service -> node \x00 service ID with checks
}

func instanceKey(node, id string) string { return node + "\x00" + id }

// indexChecks indexes the checks of the given services (nil: all) and of
// the nodes their known instances run on: at hospital scale the answer
// holds every check of the registry, and a change concerns a few.
func indexChecks(checks []*api.HealthCheck, services map[string]bool, known map[string][]RawInstance) *checkIndex {
	x := &checkIndex{own: map[string]api.HealthChecks{}, nodes: map[string]api.HealthChecks{},
		instances: map[string]map[string]struct{}{}}
	var nodes map[string]bool
	if services != nil {
		nodes = map[string]bool{}
		for name := range services {
			for _, in := range known[name] {
				nodes[in.Node] = true
			}
		}
	}
	for _, ch := range checks {
		if ch.ServiceID == "" {
			if nodes == nil || nodes[ch.Node] {
				x.nodes[ch.Node] = append(x.nodes[ch.Node], ch)
			}
			continue
		}
		if services != nil && !services[ch.ServiceName] {
			continue
		}
		k := instanceKey(ch.Node, ch.ServiceID)
		x.own[k] = append(x.own[k], ch)
		if x.instances[ch.ServiceName] == nil {
			x.instances[ch.ServiceName] = map[string]struct{}{}
		}
		x.instances[ch.ServiceName][k] = struct{}{}
	}
	return x
}

// checkIDs lists checks' IDs, sorted: what identifies an instance's set
// of checks whatever their statuses.
func checkIDs(cs api.HealthChecks) string {
	ids := make([]string, 0, len(cs))
	for _, c := range cs {
		if c.ServiceID != "" {
			ids = append(ids, c.CheckID)
		}
	}
	sort.Strings(ids)
	return strings.Join(ids, "\x00")
}

// healthOf is an instance's health and weight from all its checks (its
// own and its node's), as Consul's health endpoint aggregates them.
func healthOf(checks api.HealthChecks, w api.AgentWeights) (Health, int) {
	health := Health(checks.AggregatedStatus())
	switch health {
	case HealthPassing, HealthWarning:
	default: // critical and maintenance
		health = HealthCritical
	}
	if health == HealthWarning {
		return health, w.Warning
	}
	return health, w.Passing
}

// refreshHealth recomputes a service's instances from a newer checks
// answer. It reports false when the service must be read again: an
// instance or a check was registered or removed since it was read.
func refreshHealth(service string, read []fetchedInstance, x *checkIndex) ([]RawInstance, bool) {
	if x == nil || read == nil {
		return nil, false
	}
	known := make(map[string]bool, len(read))
	out := make([]RawInstance, 0, len(read))
	for _, f := range read {
		k := instanceKey(f.raw.Node, f.raw.ID)
		known[k] = true
		own := x.own[k]
		if checkIDs(own) != f.checks {
			return nil, false
		}
		all := append(append(api.HealthChecks{}, x.nodes[f.raw.Node]...), own...)
		r := f.raw
		r.Health, r.Weight = healthOf(all, f.weights)
		out = append(out, r)
	}
	for k := range x.instances[service] {
		if !known[k] {
			return nil, false // checks of an instance not read yet
		}
	}
	return out, true
}
