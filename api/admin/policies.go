package admin

import (
	"fmt"
	"time"
)

// PoliciesResponse is the body of GET /debug/policies: every policy
// object and whether it is in force, so an operator finds the one that is
// not without reading the control plane's log.
type PoliciesResponse struct {
	// Source names the policy source; empty when there is none.
	Source string `json:"source,omitempty"`
	// Resolved says whether a policy set has been applied yet.
	Resolved bool `json:"resolved"`
	// Errors are the source's (e.g. a file that does not decode).
	Errors []string `json:"errors,omitempty"`
	// Objects are every policy object with its conditions (never null).
	Objects []ObjectStatus `json:"objects"`
}

// NotAccepted lists the objects that are not in force.
func (r *PoliciesResponse) NotAccepted() []ObjectStatus {
	var out []ObjectStatus
	for _, o := range r.Objects {
		if !o.Accepted() {
			out = append(out, o)
		}
	}
	return out
}

// Key identifies a policy object.
type Key struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
}

// String is how logs and `medmesh status` name the object:
// "MeshRoute default/emr".
func (k Key) String() string { return fmt.Sprintf("%s %s/%s", k.Kind, k.Namespace, k.Name) }

// ObjectStatus is one policy object's standing, with the conditions a
// Kubernetes source also writes to the object's status subresource.
type ObjectStatus struct {
	Key
	// Service is the service the object configures.
	Service    string `json:"service,omitempty"`
	Generation int64  `json:"generation,omitempty"`
	// Source is the file the object came from (file mode).
	Source string `json:"source,omitempty"`
	// Conditions are Accepted, and Invalid when the object is not valid.
	Conditions []Condition `json:"conditions"`
}

// Condition types and statuses: the values of api/v1alpha1 and
// Kubernetes, repeated here so clients need neither.
const (
	// ConditionAccepted is True when the object is in force.
	ConditionAccepted = "Accepted"
	// ConditionInvalid is True when a field is wrong (Message names it).
	ConditionInvalid = "Invalid"

	ConditionTrue  = "True"
	ConditionFalse = "False"
)

// Condition is one condition of an object, with metav1.Condition's JSON
// field names so /debug/policies reads like `kubectl get -o json`.
type Condition struct {
	Type   string `json:"type"`
	Status string `json:"status"`
	// ObservedGeneration is the object generation the condition describes.
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// LastTransitionTime is when Status last changed, to the second, UTC
	// (as Kubernetes stores it).
	LastTransitionTime time.Time `json:"lastTransitionTime"`
	Reason             string    `json:"reason"`
	Message            string    `json:"message"`
}

// Accepted reports whether the object is in force.
func (s ObjectStatus) Accepted() bool {
	if c := s.condition(ConditionAccepted); c != nil {
		return c.Status == ConditionTrue
	}
	return false
}

// Message is the reason the object is not accepted ("Reason: message"),
// or "" when it is or has no Accepted condition.
func (s ObjectStatus) Message() string {
	if c := s.condition(ConditionAccepted); c != nil && c.Status != ConditionTrue {
		return c.Reason + ": " + c.Message
	}
	return ""
}

func (s ObjectStatus) condition(typ string) *Condition {
	for i := range s.Conditions {
		if s.Conditions[i].Type == typ {
			return &s.Conditions[i]
		}
	}
	return nil
}
