package v1alpha1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// MeshRoute routes the calls made to one service: the first rule whose
// match fits a request decides where it goes and with which timeout,
// retries, fault injection and mirroring. Requests no rule matches keep
// the service's default route. One MeshRoute per service: if two name the
// same service, the older one (creationTimestamp, then name) is in force
// and the other is reported Conflicted.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=mroute,categories=medmesh
// +kubebuilder:printcolumn:name="Service",type=string,JSONPath=`.spec.service`
// +kubebuilder:printcolumn:name="Accepted",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type MeshRoute struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec MeshRouteSpec `json:"spec"`
	// +optional
	Status PolicyStatus `json:"status,omitempty"`
}

// MeshRouteSpec is what a MeshRoute asks for.
type MeshRouteSpec struct {
	// Service is the service whose callers this route applies to (the
	// host they call, e.g. `emr`).
	Service ServiceName `json:"service"`
	// Rules are tried in order; the first match wins.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=32
	Rules []RouteRule `json:"rules"`
}

// RouteRule is one match and what to do with the requests it matches.
type RouteRule struct {
	// Name appears in Envoy's route name and in status messages.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Name string `json:"name,omitempty"`
	// Match selects requests; omitted, the rule matches every request.
	// +optional
	Match *RouteMatch `json:"match,omitempty"`
	// Destinations share the matched requests by weight (a canary:
	// 90 to `version: v1`, 10 to `version: v2`).
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=8
	Destinations []WeightedDestination `json:"destinations"`
	// Timeout bounds the whole request, retries included; "0s" disables
	// it (streams). Omitted: the service's default.
	// +optional
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('0s')",message="must not be negative"
	Timeout *metav1.Duration `json:"timeout,omitempty"`
	// Retries replace the service's default retry policy.
	// +optional
	Retries *Retries `json:"retries,omitempty"`
	// Fault injects delays or errors, for drills ("what does the ward
	// app do when the EMR is slow?").
	// +optional
	Fault *Fault `json:"fault,omitempty"`
	// Mirror copies requests to another destination, whose answers are
	// discarded (Envoy sidecars only; proxyless gRPC cannot mirror).
	// +optional
	Mirror *Mirror `json:"mirror,omitempty"`
}

// RouteMatch is true when every given part matches.
type RouteMatch struct {
	// +optional
	Path *PathMatch `json:"path,omitempty"`
	// Headers must all match.
	// +optional
	// +kubebuilder:validation:MaxItems=8
	Headers []HeaderMatch `json:"headers,omitempty"`
	// Method is the HTTP method (gRPC calls are all POST).
	// +optional
	// +kubebuilder:validation:Enum=GET;HEAD;POST;PUT;PATCH;DELETE;OPTIONS
	Method string `json:"method,omitempty"`
}

// MatchType is how a value is compared.
// +kubebuilder:validation:Enum=Exact;Prefix;RegularExpression;Present
type MatchType string

// Match types. RegularExpression is RE2 syntax, matched against the whole
// value. Present (headers only) ignores the value.
const (
	MatchExact   MatchType = "Exact"
	MatchPrefix  MatchType = "Prefix"
	MatchRegex   MatchType = "RegularExpression"
	MatchPresent MatchType = "Present"
)

// PathMatch matches the request path (for gRPC: /package.Service/Method).
// +kubebuilder:validation:XValidation:rule="self.type != 'Present'",message="type: Present is for headers only"
// +kubebuilder:validation:XValidation:rule="self.type == 'RegularExpression' || self.value.startsWith('/')",message="value: an Exact or Prefix path starts with /"
type PathMatch struct {
	// +kubebuilder:default=Prefix
	// +optional
	Type MatchType `json:"type,omitempty"`
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=1024
	Value string `json:"value"`
}

// HeaderMatch matches one request header.
// +kubebuilder:validation:XValidation:rule="self.type == 'Present' || (has(self.value) && size(self.value) > 0)",message="value is required unless type is Present"
type HeaderMatch struct {
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	// +kubebuilder:validation:Pattern=`^:?[A-Za-z0-9!#$%&'*+.^_|~-]+$`
	Name string `json:"name"`
	// +kubebuilder:default=Exact
	// +optional
	Type MatchType `json:"type,omitempty"`
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Value string `json:"value,omitempty"`
}

// WeightedDestination is a share of a rule's traffic.
type WeightedDestination struct {
	// Service receives the traffic; omitted, the route's own service.
	// +optional
	Service ServiceName `json:"service,omitempty"`
	// Subset narrows the service to instances whose meta match.
	// +optional
	Subset Subset `json:"subset,omitempty"`
	// Weight is relative to the rule's other destinations; 0 sends
	// nothing (a canary paused). The weights of a rule must not sum to 0.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=10000
	// +kubebuilder:default=1
	// +optional
	Weight *int32 `json:"weight,omitempty"`
}

// RetryOn is a condition under which a request is retried.
// +kubebuilder:validation:Enum="5xx";gateway-error;reset;connect-failure;retriable-4xx;refused-stream;cancelled;deadline-exceeded;internal;resource-exhausted;unavailable
type RetryOn string

// Retries is a retry policy.
type Retries struct {
	// Attempts are retries after the first try; 0 turns retries off.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=10
	Attempts int32 `json:"attempts"`
	// PerTryTimeout bounds each try (Envoy sidecars; grpc-go has none).
	// +optional
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s')",message="must be positive"
	PerTryTimeout *metav1.Duration `json:"perTryTimeout,omitempty"`
	// RetryOn lists the conditions to retry on: HTTP ones (5xx, reset,
	// ...) and gRPC status names (unavailable, ...), which proxyless
	// gRPC also understands. HTTP requests with non-idempotent methods
	// (POST, PATCH) are never retried after reaching the upstream: a
	// medication order sent twice is a clinical incident.
	// Omitted: the service's default conditions.
	// +optional
	// +kubebuilder:validation:MaxItems=11
	RetryOn []RetryOn `json:"retryOn,omitempty"`
	// +optional
	Backoff *Backoff `json:"backoff,omitempty"`
}

// Backoff is exponential backoff with jitter between retries.
// +kubebuilder:validation:XValidation:rule="!has(self.base) || !has(self.max) || duration(self.base) <= duration(self.max)",message="base must not exceed max"
type Backoff struct {
	// +optional
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s')",message="must be positive"
	Base *metav1.Duration `json:"base,omitempty"`
	// +optional
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s')",message="must be positive"
	Max *metav1.Duration `json:"max,omitempty"`
}

// Fault injects delays and aborts into a share of requests.
// +kubebuilder:validation:XValidation:rule="has(self.delay) || has(self.abort)",message="give delay, abort or both"
type Fault struct {
	// +optional
	Delay *FaultDelay `json:"delay,omitempty"`
	// +optional
	Abort *FaultAbort `json:"abort,omitempty"`
}

// FaultDelay holds a share of requests for a fixed time.
type FaultDelay struct {
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s')",message="must be positive"
	Duration metav1.Duration `json:"duration"`
	// Percent of requests delayed.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	Percent int32 `json:"percent"`
}

// FaultAbort answers a share of requests with an error without calling
// the service.
// +kubebuilder:validation:XValidation:rule="has(self.httpStatus) != has(self.grpcStatus)",message="give exactly one of httpStatus and grpcStatus"
type FaultAbort struct {
	// +optional
	// +kubebuilder:validation:Minimum=200
	// +kubebuilder:validation:Maximum=599
	HTTPStatus *int32 `json:"httpStatus,omitempty"`
	// GRPCStatus is a gRPC status code (14 is UNAVAILABLE).
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=16
	GRPCStatus *int32 `json:"grpcStatus,omitempty"`
	// Percent of requests aborted.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	Percent int32 `json:"percent"`
}

// Mirror copies a share of requests to another destination.
type Mirror struct {
	// Service receives the copies; omitted, the route's own service.
	// +optional
	Service ServiceName `json:"service,omitempty"`
	// +optional
	Subset Subset `json:"subset,omitempty"`
	// Percent of requests copied.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	// +kubebuilder:default=100
	// +optional
	Percent *int32 `json:"percent,omitempty"`
}

// MeshRouteList is a list of MeshRoutes.
// +kubebuilder:object:root=true
type MeshRouteList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []MeshRoute `json:"items"`
}
