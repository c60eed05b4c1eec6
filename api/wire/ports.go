package wire

// Well-known ports. 15000-15999 are reserved for medmesh inside an
// injected pod, so an application cannot take one by accident.
const (
	// AdminPort serves the control plane's admin HTTP (/healthz,
	// /metrics, /debug/*).
	AdminPort = 15000
	// OutboundHTTPPort is where applications beside an Envoy sidecar send
	// plain HTTP for mesh services (and where redirected outbound traffic
	// lands).
	OutboundHTTPPort = 15001
	// InboundPort is Envoy's inbound listener in an injected pod;
	// redirected inbound traffic lands here.
	InboundPort = 15006
	// XDSPort is the control plane's ADS (xDS) gRPC port.
	XDSPort = 15010
	// ExtProcPort is `medmesh sidecar`'s ext_proc gRPC port, on loopback.
	ExtProcPort = 15090
	// SidecarHealthPort is `medmesh sidecar`'s /healthz, /readyz and
	// /metrics, which the kubelet probes.
	SidecarHealthPort = 15091
	// EnvoyAdminPort is the injected Envoy's admin interface (loopback).
	EnvoyAdminPort = 15901
)

// Default addresses built from the ports, as the commands' flags default.
const (
	DefaultXDSAddress     = "127.0.0.1:15010"
	DefaultAdminAddress   = "127.0.0.1:15000"
	DefaultExtProcAddress = "127.0.0.1:15090"
	DefaultSidecarHealth  = "127.0.0.1:15091"
)
