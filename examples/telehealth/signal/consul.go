package signal

import (
	"github.com/hashicorp/consul/api"

	"medmesh/registry"
)

// Service is the signalling service's Consul service: clients dial
// xds:///telehealth-signal.
const Service = "telehealth-signal"

// Registration is the gRPC door's Consul registration: kind webrtc,
// protocol grpc, and PHI, because who calls whom for a video visit is
// patient information even when no content is: the mesh then admits
// only the callers an intention names (PHI services deny by default)
// and residency keeps the service's calls inside its site.
func Registration(id, address string, port int, site string) *api.AgentServiceRegistration {
	meta := map[string]string{
		registry.MetaKind:     string(registry.KindWebRTC),
		registry.MetaProtocol: string(registry.ProtocolGRPC),
		registry.MetaPHI:      "true",
	}
	if site != "" {
		meta[registry.MetaSite] = site
	}
	return &api.AgentServiceRegistration{ID: id, Name: Service, Address: address, Port: port, Meta: meta}
}
