// Package ir is medmesh's intermediate representation: a plain, passive Go
// model of the mesh with every default resolved and every accepted policy
// applied. Build makes it in one call from its inputs (catalog, accepted
// policies, defaults, trust domain, trust bundle); nothing changes it
// afterwards. Its types are its own (no registry or Kubernetes types), it
// holds no Envoy protos, and it knows nothing of connections: the
// translate package turns it, plus explicit per-proxy inputs, into xDS
// resources.
package ir

import (
	"time"

	"medmesh/api/wire"
)

// Mesh is everything the translator needs, for all proxies.
type Mesh struct {
	TrustDomain string    `json:"trustDomain"`
	Services    []Service `json:"services"` // sorted by name
	// Warnings name what could not be used (e.g. an instance registered
	// with a host name, which Envoy cannot take as an endpoint).
	Warnings []string `json:"warnings,omitempty"`
	// UnresolvedIntentions name services that are not registered (yet);
	// they are kept, and apply when the service appears.
	UnresolvedIntentions []string `json:"unresolvedIntentions,omitempty"`
	// MTLS turns on mutual TLS with SPIFFE identities on every hop.
	MTLS bool `json:"mtls,omitempty"`
	// Site is the site this mesh serves; empty for a single site.
	Site string `json:"site,omitempty"`
	// Residency says, per service and other site, whether that site's
	// instances are routed here and which flows the policy refuses;
	// ResidencyConditions name services that can be served neither here
	// nor elsewhere (sites.go).
	Residency           []SiteDecision       `json:"residency,omitempty"`
	ResidencyConditions []ResidencyCondition `json:"residencyConditions,omitempty"`
	// BundlePEM is the trust bundle (PEM roots) proxies verify peers with.
	BundlePEM []byte `json:"-"`
	// EnvoyTracing is where Envoy sidecars send request spans (tracing.go).
	EnvoyTracing EnvoyTracing `json:"envoyTracing,omitzero"`

	instances map[string]instanceRef // by instance ID; see Instance
	scope     *scopeIndex            // who may call whom; see Scope
}

type instanceRef struct{ service, instance int }

// Service is one upstream service with its resolved traffic settings.
type Service struct {
	Name      string   `json:"name"`
	Namespace string   `json:"namespace"`
	Kind      Kind     `json:"kind"`
	Protocol  Protocol `json:"protocol"`
	PHI       bool     `json:"phi"`
	// Port is the port callers address the service on; for TCP services it
	// is the local outbound listener's port on Envoy sidecars.
	Port           int            `json:"port"`
	LB             LoadBalancer   `json:"lb"`
	ConnectTimeout time.Duration  `json:"connectTimeout"`
	CircuitBreaker CircuitBreaker `json:"circuitBreaker"`
	Outlier        Outlier        `json:"outlierDetection"`
	Route          Route          `json:"route"`
	// Localities hold the endpoints that may receive traffic: passing
	// (HEALTHY) and warning (DEGRADED) instances, never critical ones.
	Localities []LocalityEndpoints `json:"localities"`
	// RemoteSites are the other sites whose instances are routed here
	// (residency allowed every local caller), sorted.
	RemoteSites []string `json:"remoteSites,omitempty"`
	// Instances are all registered instances, healthy or not: a proxy
	// fronting one gets its inbound side even while it recovers.
	Instances []Instance `json:"instances"`
	// Authz is who may call the service (enforced when mTLS is on).
	Authz Authz `json:"authz"`
	// Permissive accepts plaintext beside mTLS on Envoy sidecars (a
	// migration aid; never for PHI services).
	Permissive bool `json:"permissive,omitempty"`
	// Policy holds what accepted policies add (policy.go); zero without.
	Policy ServicePolicy `json:"policy,omitzero"`
	// ExplicitScope narrows what the service's proxies are sent to the
	// services whose authorization names it (scope.go).
	ExplicitScope bool `json:"explicitScope,omitempty"`
}

// Authz is the authorization of callers by SPIFFE ID, resolved from
// intentions and the service's default. It is independent of where the
// rules came from (Consul intentions today, policies later).
type Authz struct {
	// Allowed and Denied are callers named explicitly.
	Allowed []string `json:"allowed,omitempty"`
	Denied  []string `json:"denied,omitempty"`
	// OthersAllowed decides callers no rule names: a wildcard ("*")
	// intention if there is one, else the default: PHI services deny,
	// others allow.
	OthersAllowed bool `json:"othersAllowed"`
	// Others, at an edge site, narrows "others" to the workloads of these
	// sites (wire.AnyAtSite principals): this one, and the peered sites
	// residency lets call the service. Empty: the whole trust domain.
	Others []string `json:"others,omitempty"`
	// Rules are access policies (policy.go): Deny rules win over
	// everything, Allow rules add to the above.
	Rules []AccessRule `json:"rules,omitempty"`
}

// LoadBalancer is the load-balancing algorithm and its parameters.
type LoadBalancer struct {
	Policy LBPolicy `json:"policy"`
	// ChoiceCount is for least_request (power of N choices).
	ChoiceCount uint32 `json:"choiceCount,omitempty"`
	// MinRingSize and MaxRingSize are for ring_hash.
	MinRingSize uint64 `json:"minRingSize,omitempty"`
	MaxRingSize uint64 `json:"maxRingSize,omitempty"`
}

// CircuitBreaker bounds what one proxy may ask of an upstream.
type CircuitBreaker struct {
	MaxConnections     uint32 `json:"maxConnections"`
	MaxPendingRequests uint32 `json:"maxPendingRequests"`
	MaxRequests        uint32 `json:"maxRequests"`
	// RetryBudgetPercent caps concurrent retries as a share of active
	// requests, so retries cannot amplify an outage into a storm.
	RetryBudgetPercent  float64 `json:"retryBudgetPercent"`
	MinRetryConcurrency uint32  `json:"minRetryConcurrency"`
}

// Outlier configures passive health checking (ejection of failing
// hosts). Envoy and gRPC implement different detectors, so the translator
// writes each data plane the one it has (docs/defaults.md): Envoy counts
// consecutive failures; gRPC implements only success-rate and
// failure-percentage ejection and ignores the consecutive counts.
type Outlier struct {
	// Consecutive5xx and ConsecutiveGatewayFailure are Envoy's detectors.
	Consecutive5xx            uint32 `json:"consecutive5xx"`
	ConsecutiveGatewayFailure uint32 `json:"consecutiveGatewayFailure"`
	// FailurePercentage* are gRPC's detector for proxyless clients: an
	// instance that failed more than FailurePercentageThreshold percent of
	// at least FailurePercentageRequestVolume calls in an interval is
	// ejected, once at least FailurePercentageMinimumHosts instances had
	// that volume.
	FailurePercentageThreshold     uint32        `json:"failurePercentageThreshold"`
	FailurePercentageMinimumHosts  uint32        `json:"failurePercentageMinimumHosts"`
	FailurePercentageRequestVolume uint32        `json:"failurePercentageRequestVolume"`
	Interval                       time.Duration `json:"interval"`
	BaseEjectionTime               time.Duration `json:"baseEjectionTime"`
	// MaxEjectionTime caps the ejection time, which grows with each
	// ejection of the same instance.
	MaxEjectionTime    time.Duration `json:"maxEjectionTime"`
	MaxEjectionPercent uint32        `json:"maxEjectionPercent"`
}

// Route holds per-request settings for calls to a service.
type Route struct {
	// Timeout is the whole-request timeout; 0 disables it (streams).
	Timeout time.Duration `json:"timeout"`
	// IdleTimeout ends streams with no activity.
	IdleTimeout time.Duration `json:"idleTimeout"`
	Retry       Retry         `json:"retry"`
	// WebSocket allows HTTP/1.1 upgrade (vitals streams, WebRTC signalling).
	WebSocket bool `json:"webSocket,omitempty"`
}

// Retry is the retry policy of a route.
type Retry struct {
	Attempts      uint32        `json:"attempts"` // retries, not counting the first try
	PerTryTimeout time.Duration `json:"perTryTimeout"`
	// RetryOn is the Envoy retry_on list; for gRPC services it holds status
	// names that grpc-go understands too.
	RetryOn              []string      `json:"retryOn"`
	RetriableStatusCodes []uint32      `json:"retriableStatusCodes,omitempty"`
	BackoffBase          time.Duration `json:"backoffBase"`
	BackoffMax           time.Duration `json:"backoffMax"`
	// IdempotentOnly restricts retries to idempotent HTTP methods: a
	// medication order sent twice is a clinical incident.
	IdempotentOnly bool `json:"idempotentOnly"`
}

// LocalityEndpoints are the endpoints of one locality.
type LocalityEndpoints struct {
	Locality Locality `json:"locality"`
	// Remote: another site's endpoints (imported through peering, where
	// residency allows); they rank after every local locality.
	Remote    bool       `json:"remote,omitempty"`
	Endpoints []Endpoint `json:"endpoints"`
}

// Endpoint is one routable instance.
type Endpoint struct {
	InstanceID string `json:"instanceId"`
	Address    string `json:"address"`
	Port       int    `json:"port"`
	Degraded   bool   `json:"degraded,omitempty"`
	Weight     uint32 `json:"weight"`
}

// Proxy is the data plane a translation is for: which service it belongs
// to, what kind it is, and the instance it fronts. Facts of its connection
// (peer address, proof of identity, issued SVID) are not part of it; the
// SVID reaches the translator as an explicit input.
type Proxy struct {
	// ID is the xDS node.id: for Envoy the Consul service ID of the
	// instance it fronts.
	ID string `json:"id"`
	// Service is node.cluster: the service the proxy belongs to.
	Service string         `json:"service"`
	Kind    wire.ProxyKind `json:"kind"`
	// Instance is the instance the proxy fronts, when known.
	Instance *Instance `json:"instance,omitempty"`
}

// Identity is an X.509-SVID as PEM: certificate chain (leaf first) and key.
type Identity struct {
	CertChain   []byte
	PrivateKey  []byte
	Fingerprint string // of the leaf; changes on every renewal
	SPIFFEID    string
}
