package ir

// The IR's own vocabulary for services and instances. The values are the
// registry conventions' (CONTRACT.md: medmesh-kind, medmesh-protocol,
// medmesh-lb), so Build converts by value; the types are separate so
// that the translator depends on the IR alone.

// Kind is the clinical kind of a service.
type Kind string

// Kinds of clinical services.
const (
	KindEMR     Kind = "emr"
	KindHIS     Kind = "his"
	KindImaging Kind = "imaging"
	KindVitals  Kind = "vitals"
	KindWebRTC  Kind = "webrtc"
	KindGeneric Kind = "generic"
)

// Protocol is the application protocol a service speaks.
type Protocol string

// Protocols.
const (
	ProtocolHTTP  Protocol = "http"
	ProtocolHTTP2 Protocol = "http2"
	ProtocolGRPC  Protocol = "grpc"
	ProtocolTCP   Protocol = "tcp"
)

// IsHTTP2 reports whether upstream connections must use HTTP/2.
func (p Protocol) IsHTTP2() bool { return p == ProtocolHTTP2 || p == ProtocolGRPC }

// IsHTTP reports whether the protocol is routed at layer 7.
func (p Protocol) IsHTTP() bool { return p != ProtocolTCP }

// LBPolicy is a load-balancing algorithm.
type LBPolicy string

// Load-balancing policies.
const (
	LBRoundRobin   LBPolicy = "round_robin"
	LBLeastRequest LBPolicy = "least_request"
	LBRingHash     LBPolicy = "ring_hash"
	LBMaglev       LBPolicy = "maglev"
	LBRandom       LBPolicy = "random"
)

// Locality places endpoints for zone-aware routing and failover.
type Locality struct {
	Region string `json:"region,omitempty"`
	Zone   string `json:"zone,omitempty"`
	Site   string `json:"site,omitempty"`
}

// Instance is one registered instance of a service, as a proxy fronting
// it and a route subset selecting it need it.
type Instance struct {
	// ID is the registry's instance ID; Envoy sidecars use it as node.id.
	ID      string `json:"id"`
	Address string `json:"address"`
	Port    int    `json:"port"`
	// AppPort is where the local application listens behind an Envoy
	// sidecar; 0 means Port.
	AppPort int `json:"appPort,omitempty"`
	// Meta is what route subsets select instances by (e.g. version: v2).
	Meta map[string]string `json:"meta,omitempty"`
}
