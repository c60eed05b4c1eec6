package signal

import "medmesh/registry"

// Service is the signalling service's Consul service: clients dial
// xds:///telehealth-signal.
const Service = "telehealth-signal"

// Meta is the gRPC door's Consul service meta: kind webrtc, protocol
// grpc, and PHI, because who calls whom for a video visit is patient
// information even when no content is: the mesh then admits only the
// callers an intention names (PHI services deny by default) and
// residency keeps the service's calls inside its site.
func Meta(site string) map[string]string {
	meta := map[string]string{
		registry.MetaKind:     string(registry.KindWebRTC),
		registry.MetaProtocol: string(registry.ProtocolGRPC),
		registry.MetaPHI:      "true",
	}
	if site != "" {
		meta[registry.MetaSite] = site
	}
	return meta
}
