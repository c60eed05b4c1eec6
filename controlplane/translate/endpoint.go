package translate

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"

	"medmesh/controlplane/ir"
)

// loadAssignment lists a service's routable endpoints by locality. Warning
// instances are DEGRADED: Envoy uses them only when healthy capacity runs
// short, which is what a clinician wants from a struggling instance.
func loadAssignment(s *ir.Service) *endpointv3.ClusterLoadAssignment {
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: s.Name}
	for _, loc := range s.Localities {
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
		cla.Endpoints = append(cla.Endpoints, lle)
	}
	return cla
}
