package translate

import (
	"slices"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"

	"medmesh/controlplane/ir"
)

// loadAssignment lists a service's routable endpoints by locality. Warning
// instances are DEGRADED: Envoy uses them only when healthy capacity runs
// short, which is what a clinician wants from a struggling instance.
func loadAssignment(s *ir.Service) *endpointv3.ClusterLoadAssignment {
	return assignment(s.Name, s.Localities, s.Policy.Failover)
}

// assignment lists endpoints by locality, with failover priorities.
func assignment(cluster string, localities []ir.LocalityEndpoints, failover []ir.Locality) *endpointv3.ClusterLoadAssignment {
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: cluster}
	prio := priorities(localities, failover)
	for i, loc := range localities {
		var total uint32
		lle := &endpointv3.LocalityLbEndpoints{
			Locality: &corev3.Locality{Region: loc.Locality.Region, Zone: loc.Locality.Zone, SubZone: loc.Locality.Site},
		}
		for _, ep := range loc.Endpoints {
			status := corev3.HealthStatus_HEALTHY
			if ep.Degraded {
				status = corev3.HealthStatus_DEGRADED
			}
			total += ep.Weight
			lle.LbEndpoints = append(lle.LbEndpoints, &endpointv3.LbEndpoint{
				HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
					Address: socketAddress(ep.Address, ep.Port),
				}},
				HealthStatus:        status,
				LoadBalancingWeight: u32(ep.Weight),
			})
		}
		// grpc-go ignores localities without a weight; the sum of endpoint
		// weights keeps locality shares proportional to capacity.
		lle.LoadBalancingWeight = u32(total)
		lle.Priority = prio[i]
		cla.Endpoints = append(cla.Endpoints, lle)
	}
	if slices.ContainsFunc(prio, func(p uint32) bool { return p > 0 }) {
		// Envoy starts moving traffic to the next priority (another
		// locality, another site) as soon as fewer than 1/1.4 of a
		// priority's hosts are healthy (overprovisioning_factor defaults
		// to 140). Failover is meant for when this site cannot serve at
		// all, which is also what gRPC does (it ignores the factor and
		// fails over only when a priority has no ready instance): a
		// factor of 100000 keeps the traffic while 0.1 % of the
		// priority's instances are healthy.
		cla.Policy = &endpointv3.ClusterLoadAssignment_Policy{OverprovisioningFactor: u32(100000)}
	}
	return cla
}

// priorities ranks each locality by the first failover entry it matches
// (a MeshDestination's localityFailover), this site's localities before
// any other site's (instances imported through peering, where residency
// allows: another site takes traffic only when this one cannot). Ranks are
// made contiguous from 0: grpc-go rejects an assignment with a gap in its
// priorities, and a gap appears whenever a listed locality has no
// endpoints right now.
func priorities(localities []ir.LocalityEndpoints, failover []ir.Locality) []uint32 {
	out := make([]uint32, len(localities))
	remote := false
	for _, loc := range localities {
		remote = remote || loc.Remote
	}
	if len(failover) == 0 && !remote {
		return out
	}
	span := uint32(len(failover)) + 1 // ranks a site's localities can take
	used := map[uint32]bool{}
	for i, loc := range localities {
		out[i] = ir.Priority(failover, loc.Locality)
		if loc.Remote {
			out[i] += span
		}
		used[out[i]] = true
	}
	rank := map[uint32]uint32{}
	var next uint32
	for p := uint32(0); p < 2*span; p++ {
		if used[p] {
			rank[p] = next
			next++
		}
	}
	for i := range out {
		out[i] = rank[out[i]]
	}
	return out
}
