package wire

// ProxyKind is the kind of data plane a proxy is. A bootstrap declares it
// in the node metadata under NodeMetaProxyKind; Envoy is the default.
type ProxyKind string

// Proxy kinds.
const (
	ProxyEnvoy     ProxyKind = "envoy"
	ProxyProxyless ProxyKind = "proxyless"
	// ProxySVIDAgent is `medmesh sidecar --svid-dir`: it asks only for its
	// service's SVID and bundle (over SDS) and writes them to files for a
	// proxyless application.
	ProxySVIDAgent ProxyKind = "svid-agent"
)

// NodeMetaProxyKind is the node metadata key by which a bootstrap
// declares the proxy kind.
const NodeMetaProxyKind = "medmesh.proxy_kind"

// ProofKind is how a workload proves which service it is.
type ProofKind string

// Kinds of proof of identity.
const (
	// ProofJoinToken is a one-time token issued by the control plane.
	ProofJoinToken ProofKind = "join-token"
	// ProofKubernetes is a projected service-account token, checked with
	// a Kubernetes TokenReview.
	ProofKubernetes ProofKind = "kubernetes"
	// ProofConsul is a Consul ACL token, checked against Consul for
	// service:write on the claimed service.
	ProofConsul ProofKind = "consul"
)

// The gRPC metadata keys (headers) by which a proxy or SVID agent
// presents its proof of identity on its xDS stream.
const (
	JoinTokenHeader = "x-medmesh-join-token"
	K8sTokenHeader  = "x-medmesh-k8s-token"
	ConsulACLHeader = "x-medmesh-consul-token"
)

// ProofHeaders maps each proof header to its kind, in order of
// preference when a stream presents several.
var ProofHeaders = []struct {
	Header string
	Kind   ProofKind
}{
	{K8sTokenHeader, ProofKubernetes},
	{ConsulACLHeader, ProofConsul},
	{JoinTokenHeader, ProofJoinToken},
}

// Proof is a credential a proxy presents on its xDS stream (in one of the
// headers above). It is never logged or shown.
type Proof struct {
	Kind  ProofKind
	Token string
}
