package registry

import (
	"fmt"
	"slices"
	"strings"
)

// RawInstance is one instance as a source found it, before meta is parsed.
type RawInstance struct {
	ServiceName string
	ID          string
	Node        string
	Address     string
	Port        int
	Health      Health
	Weight      int
	ServiceMeta map[string]string
	NodeMeta    map[string]string
	// Peer is the Consul cluster peering the instance was imported
	// through ("" for this site's own); PeerSite is that peer's site,
	// the instance's site unless its meta names one.
	Peer, PeerSite string
}

// BuildCatalog turns raw instances from any source into a normalized
// Catalog. Service-level settings (kind, protocol, PHI, LB) come from the
// instance with the lowest ID; instances that disagree are still served and
// produce a Warning, because rolling upgrades legitimately change meta one
// instance at a time.
func BuildCatalog(raw []RawInstance) (*Catalog, []Warning) {
	var warns []Warning
	byName := map[string]*Service{}
	var order []string
	settingsOf := map[string]Settings{}
	for _, r := range sortedRaw(raw) {
		set, w := ParseMeta(r.ServiceName, r.ID, r.ServiceMeta, r.NodeMeta)
		warns = append(warns, w...)
		svc, ok := byName[r.ServiceName]
		if !ok {
			svc = &Service{
				Name: r.ServiceName, Namespace: set.Namespace, Kind: set.Kind,
				Protocol: set.Protocol, PHI: set.PHI, LB: set.LB, Permissive: set.Permissive,
				ExplicitScope: set.ExplicitScope,
			}
			byName[r.ServiceName] = svc
			settingsOf[r.ServiceName] = set
			order = append(order, r.ServiceName)
		} else if first := settingsOf[r.ServiceName]; first.Kind != set.Kind || first.Protocol != set.Protocol ||
			first.PHI != set.PHI || first.LB != set.LB {
			warns = append(warns, Warning{Service: r.ServiceName, Instance: r.ID, Key: "medmesh-*",
				Value: fmt.Sprintf("%s/%s/phi=%t/%s", set.Kind, set.Protocol, set.PHI, set.LB),
				Used:  fmt.Sprintf("%s/%s/phi=%t/%s", first.Kind, first.Protocol, first.PHI, first.LB)})
		}
		weight := r.Weight
		if weight <= 0 {
			weight = 1
		}
		if set.Locality.Site == "" {
			set.Locality.Site = r.PeerSite
		}
		svc.Instances = append(svc.Instances, Instance{
			ID: r.ID, Node: r.Node, Address: r.Address, Port: r.Port, Health: r.Health,
			Weight: weight, Locality: set.Locality, AppPort: set.AppPort, Meta: userMeta(r.ServiceMeta), Peer: r.Peer,
		})
	}
	c := &Catalog{Services: make([]Service, 0, len(order))}
	for _, name := range order {
		c.Services = append(c.Services, *byName[name])
	}
	c.normalize()
	return c, warns
}

func sortedRaw(raw []RawInstance) []RawInstance {
	out := append([]RawInstance(nil), raw...)
	// Sort by (service, this site's first, ID, ...) so "the instance with
	// the lowest ID" is stable, and is a local one when there is one: a
	// peer's registration does not decide this site's service settings.
	slices.SortFunc(out, func(a, b RawInstance) int {
		if c := strings.Compare(a.ServiceName, b.ServiceName); c != 0 {
			return c
		}
		if a.Peer == "" && b.Peer != "" {
			return -1
		}
		if a.Peer != "" && b.Peer == "" {
			return 1
		}
		return compareInstances(&Instance{ID: a.ID, Node: a.Node, Address: a.Address, Port: a.Port, Peer: a.Peer},
			&Instance{ID: b.ID, Node: b.Node, Address: b.Address, Port: b.Port, Peer: b.Peer})
	})
	return out
}

// userMeta is an instance's meta without medmesh's own keys (those are
// parsed into fields); nil when nothing is left, which most instances are.
func userMeta(meta map[string]string) map[string]string {
	var out map[string]string
	for k, v := range meta {
		if strings.HasPrefix(k, "medmesh-") {
			continue
		}
		if out == nil {
			out = map[string]string{}
		}
		out[k] = v
	}
	return out
}
