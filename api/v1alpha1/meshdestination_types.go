package v1alpha1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// MeshDestination sets how callers treat one service's instances: load
// balancing, locality failover, circuit breaking, outlier detection,
// connection settings and the TLS mode. Fields left out keep medmesh's
// defaults (docs/defaults.md). One per service: the oldest is in force.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=mdest,categories=medmesh
// +kubebuilder:printcolumn:name="Service",type=string,JSONPath=`.spec.service`
// +kubebuilder:printcolumn:name="Accepted",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type MeshDestination struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec MeshDestinationSpec `json:"spec"`
	// +optional
	Status PolicyStatus `json:"status,omitempty"`
}

// MeshDestinationSpec is what a MeshDestination asks for.
type MeshDestinationSpec struct {
	// Service is the service this policy configures.
	Service ServiceName `json:"service"`
	// +optional
	LoadBalancer *LoadBalancer `json:"loadBalancer,omitempty"`
	// LocalityFailover orders where traffic goes: instances in the first
	// matching locality take all of it while any is healthy, then the
	// next; instances matching none come last. E.g. the hospital's own
	// site first, then the region's data centre. Other sites' instances
	// (imported through peering) always rank after this site's; the list
	// orders them among themselves too, e.g. [{site: hub}, {site: north}].
	// +optional
	// +kubebuilder:validation:MaxItems=8
	LocalityFailover []Locality `json:"localityFailover,omitempty"`
	// +optional
	CircuitBreaker *CircuitBreaker `json:"circuitBreaker,omitempty"`
	// +optional
	OutlierDetection *OutlierDetection `json:"outlierDetection,omitempty"`
	// +optional
	ConnectionPool *ConnectionPool `json:"connectionPool,omitempty"`
	// +optional
	TLS *TLS `json:"tls,omitempty"`
}

// LBAlgorithm is a load-balancing algorithm.
// +kubebuilder:validation:Enum=RoundRobin;LeastRequest;RingHash;Maglev;Random
type LBAlgorithm string

// Algorithms. Proxyless gRPC has RoundRobin, LeastRequest and RingHash;
// it uses RoundRobin for Maglev and Random.
const (
	LBRoundRobin   LBAlgorithm = "RoundRobin"
	LBLeastRequest LBAlgorithm = "LeastRequest"
	LBRingHash     LBAlgorithm = "RingHash"
	LBMaglev       LBAlgorithm = "Maglev"
	LBRandom       LBAlgorithm = "Random"
)

// LoadBalancer is the algorithm and its parameters. Consistent hashing
// (RingHash, Maglev) hashes the x-medmesh-affinity header, else the
// caller.
// +kubebuilder:validation:XValidation:rule="!has(self.choiceCount) || self.algorithm == 'LeastRequest'",message="choiceCount is for LeastRequest"
// +kubebuilder:validation:XValidation:rule="!(has(self.minRingSize) || has(self.maxRingSize)) || self.algorithm == 'RingHash'",message="minRingSize and maxRingSize are for RingHash"
type LoadBalancer struct {
	Algorithm LBAlgorithm `json:"algorithm"`
	// ChoiceCount is how many instances LeastRequest compares.
	// +optional
	// +kubebuilder:validation:Minimum=2
	// +kubebuilder:validation:Maximum=16
	ChoiceCount *int32 `json:"choiceCount,omitempty"`
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=8388608
	MinRingSize *int64 `json:"minRingSize,omitempty"`
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=8388608
	MaxRingSize *int64 `json:"maxRingSize,omitempty"`
}

// Locality names a region, a site, or both (service meta medmesh-region,
// medmesh-zone, medmesh-site); it matches instances whose locality has
// every field it gives. A site alone matches all of that site's
// instances, whatever their region: edge sites (each its own Consul
// datacenter, the control plane's --site) are known by site, so
// {site: hub} orders another site for failover. A zone narrows a region
// and needs one. A field given may not be empty.
// +kubebuilder:validation:XValidation:rule="has(self.region) || has(self.site)",message="a region or a site is required"
// +kubebuilder:validation:XValidation:rule="!has(self.zone) || has(self.region)",message="zone needs a region: a zone only means something inside one"
type Locality struct {
	// +optional
	// +kubebuilder:validation:MinLength=1
	Region string `json:"region,omitempty"`
	// +optional
	// +kubebuilder:validation:MinLength=1
	Zone string `json:"zone,omitempty"`
	// +optional
	// +kubebuilder:validation:MinLength=1
	Site string `json:"site,omitempty"`
}

// CircuitBreaker bounds what each caller's proxy asks of the service.
type CircuitBreaker struct {
	// +optional
	// +kubebuilder:validation:Minimum=1
	MaxConnections *int32 `json:"maxConnections,omitempty"`
	// +optional
	// +kubebuilder:validation:Minimum=1
	MaxPendingRequests *int32 `json:"maxPendingRequests,omitempty"`
	// +optional
	// +kubebuilder:validation:Minimum=1
	MaxRequests *int32 `json:"maxRequests,omitempty"`
	// MaxRetryPercent caps concurrent retries as a share of active
	// requests, so retries cannot turn a slowdown into a storm.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	MaxRetryPercent *int32 `json:"maxRetryPercent,omitempty"`
}

// OutlierDetection ejects instances that keep failing.
type OutlierDetection struct {
	// +optional
	// +kubebuilder:validation:Minimum=0
	Consecutive5xx *int32 `json:"consecutive5xx,omitempty"`
	// +optional
	// +kubebuilder:validation:Minimum=0
	ConsecutiveGatewayFailure *int32 `json:"consecutiveGatewayFailure,omitempty"`
	// +optional
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s')",message="must be positive"
	Interval *metav1.Duration `json:"interval,omitempty"`
	// +optional
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s')",message="must be positive"
	BaseEjectionTime *metav1.Duration `json:"baseEjectionTime,omitempty"`
	// MaxEjectionPercent caps the share of instances ejected at once.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	MaxEjectionPercent *int32 `json:"maxEjectionPercent,omitempty"`
}

// ConnectionPool is how callers connect to the service.
type ConnectionPool struct {
	// +optional
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s')",message="must be positive"
	ConnectTimeout *metav1.Duration `json:"connectTimeout,omitempty"`
	// MaxRequestsPerConnection closes a connection after this many
	// requests (Envoy sidecars), spreading long-lived callers.
	// +optional
	// +kubebuilder:validation:Minimum=1
	MaxRequestsPerConnection *int32 `json:"maxRequestsPerConnection,omitempty"`
}

// TLSMode is how the service's inbound side treats plaintext.
// +kubebuilder:validation:Enum=Strict;Permissive
type TLSMode string

// TLS modes. Permissive accepts plaintext beside mTLS during a migration
// and is refused for PHI services.
const (
	TLSStrict     TLSMode = "Strict"
	TLSPermissive TLSMode = "Permissive"
)

// TLS is the service's mTLS mode (with `medmesh controlplane --mtls`).
type TLS struct {
	Mode TLSMode `json:"mode"`
}

// MeshDestinationList is a list of MeshDestinations.
// +kubebuilder:object:root=true
type MeshDestinationList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []MeshDestination `json:"items"`
}
