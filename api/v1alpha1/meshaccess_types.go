package v1alpha1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// MeshAccess allows or denies callers of one service, optionally only for
// some paths and methods. It adds to Consul intentions: an Allow lets the
// callers make the listed calls even where intentions (or a PHI service's
// default-deny) would refuse them; a Deny refuses them whatever any
// intention or Allow says. Enforced on the service's inbound side when
// mTLS is on (callers are known by their SPIFFE ID only then).
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=maccess,categories=medmesh
// +kubebuilder:printcolumn:name="Service",type=string,JSONPath=`.spec.service`
// +kubebuilder:printcolumn:name="Action",type=string,JSONPath=`.spec.action`
// +kubebuilder:printcolumn:name="Accepted",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].status`
type MeshAccess struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec MeshAccessSpec `json:"spec"`
	// +optional
	Status PolicyStatus `json:"status,omitempty"`
}

// AccessAction is what happens to matching calls.
// +kubebuilder:validation:Enum=Allow;Deny
type AccessAction string

// Actions.
const (
	ActionAllow AccessAction = "Allow"
	ActionDeny  AccessAction = "Deny"
)

// MeshAccessSpec is what a MeshAccess asks for.
type MeshAccessSpec struct {
	// Service is the service being called.
	Service ServiceName  `json:"service"`
	Action  AccessAction `json:"action"`
	// From are the callers this applies to.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=32
	From []Caller `json:"from"`
	// To narrows it to some calls; omitted, every call to the service.
	// An HTTP or gRPC service only.
	// +optional
	// +kubebuilder:validation:MaxItems=16
	To []Operation `json:"to,omitempty"`
}

// Caller is a mesh service or a SPIFFE ID (e.g. a workload outside the
// catalog). Give exactly one.
// +kubebuilder:validation:XValidation:rule="has(self.service) != has(self.spiffeID)",message="give exactly one of service and spiffeID"
type Caller struct {
	// +optional
	Service ServiceName `json:"service,omitempty"`
	// +optional
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:Pattern=`^spiffe://[a-z0-9._-]+(/[A-Za-z0-9._-]+)*$`
	SpiffeID string `json:"spiffeID,omitempty"`
}

// Operation is a set of calls: any of the paths with any of the methods.
// +kubebuilder:validation:XValidation:rule="(has(self.paths) && size(self.paths) > 0) || (has(self.methods) && size(self.methods) > 0)",message="give paths, methods or both"
type Operation struct {
	// Paths are exact ("/fhir/metadata") or, ending in "*", prefixes
	// ("/fhir/Patient/*"); gRPC paths are /package.Service/Method.
	// +optional
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:Pattern=`^/[^*?#]*\*?$`
	Paths []string `json:"paths,omitempty"`
	// +optional
	// +kubebuilder:validation:MaxItems=7
	// +kubebuilder:validation:items:Enum=GET;HEAD;POST;PUT;PATCH;DELETE;OPTIONS
	Methods []string `json:"methods,omitempty"`
}

// MeshAccessList is a list of MeshAccess objects.
// +kubebuilder:object:root=true
type MeshAccessList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []MeshAccess `json:"items"`
}
