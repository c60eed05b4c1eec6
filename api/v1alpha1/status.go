package v1alpha1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// Condition types and reasons every policy object reports.
//
// Accepted=True means the object is in force. Accepted=False says why not:
// the object is Invalid (Invalid=True names the field), or it lost a
// conflict to an older object for the same service (reason Conflicted).
const (
	ConditionAccepted = "Accepted"
	ConditionInvalid  = "Invalid"

	ReasonAccepted = "Accepted"
	// ReasonInvalid: a field is wrong (the message names it).
	ReasonInvalid = "Invalid"
	// ReasonServiceNotFound: a service the object names is not registered.
	ReasonServiceNotFound = "ServiceNotFound"
	// ReasonSubsetNotFound: a subset matches no registered instance (a
	// typo in the selector, or a canary not deployed yet). The route
	// waits rather than send a share of the traffic nowhere.
	ReasonSubsetNotFound = "SubsetNotFound"
	// ReasonConflicted: an older object already configures the service.
	ReasonConflicted = "Conflicted"
	// ReasonDecodeError: the file could not be decoded (file mode only).
	ReasonDecodeError = "DecodeError"
	// ReasonValid goes with Invalid=False.
	ReasonValid = "Valid"
)

// PolicyStatus is the status of every medmesh policy object.
type PolicyStatus struct {
	// ObservedGeneration is the generation the conditions describe.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Conditions: Accepted, and Invalid when the object is not.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// ServiceName is a mesh service (Consul service name: DNS label rules).
// +kubebuilder:validation:MinLength=1
// +kubebuilder:validation:MaxLength=63
// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
type ServiceName string

// Subset selects a service's instances by their service meta (Consul
// `Meta`, e.g. `version: v2`); every pair must match.
// +kubebuilder:validation:MaxProperties=4
type Subset map[string]string
