// Package policy turns operators' policy objects (api/v1alpha1) into the
// IR's plain policies, and says for every object whether it is in force.
//
// Sources (Dir: a watched directory of YAML files; Kubernetes: the API
// server through controller-runtime's informers, which also writes each
// object's status back through a leader Lease) each produce a complete Set
// on every change, like registry's catalog sources. Resolve is a pure function of a Set, the catalog and the
// defaults: it validates each object (what a CRD schema checks, and what
// it cannot: regexes compile, weights do not sum to zero, services
// exist), settles conflicts (one route and one destination policy per
// service: the oldest wins) and returns the accepted policies plus a
// status with conditions for every object. An invalid object affects
// nothing; the others keep working.
package policy

import (
	"context"
	"fmt"
	"sort"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"medmesh/api/v1alpha1"
)

// Set is every policy object a source knows, complete (not a delta).
// Treat it as read-only: sources build a new one on every change.
type Set struct {
	Routes       []v1alpha1.MeshRoute       `json:"routes,omitempty"`
	Destinations []v1alpha1.MeshDestination `json:"destinations,omitempty"`
	Access       []v1alpha1.MeshAccess      `json:"access,omitempty"`
	// Errors are what the source could not read (file mode: a file with
	// a YAML error or an unknown field, whose previous content stays in
	// force), each naming the file, the object and the field.
	Errors []string `json:"errors,omitempty"`
}

// Source produces policy Sets: Dir for --policies, Kubernetes for
// --kubeconfig (which lists its informers' caches into a Set on every
// event). The control plane runs at most one.
type Source interface {
	Name() string
	// Run sends complete Sets on out ("latest wins": a slow reader gets
	// the newest, see internal/latest) until ctx ends. The first Set is
	// sent as soon as the source has read everything once, even if it is
	// empty.
	Run(ctx context.Context, out chan *Set) error
}

// StatusWriter is implemented by sources that write statuses back (a
// Kubernetes source: to each object's status subresource, Conditions and
// ObservedGeneration from ObjectStatus.PolicyStatus). The control plane
// calls WriteStatuses from its loop after every resolution, with every
// object's status; it must not block (keep the latest, write from the
// source's own goroutine, skip objects whose conditions are unchanged).
type StatusWriter interface {
	WriteStatuses([]ObjectStatus)
}

// SourceAnnotation records where a file-mode object came from.
const SourceAnnotation = "policy.medmesh.io/source"

// Key identifies an object.
type Key struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
}

func (k Key) String() string { return fmt.Sprintf("%s %s/%s", k.Kind, k.Namespace, k.Name) }

// ObjectStatus is one object's standing: what /debug/policies shows and
// what a Kubernetes source writes to the object's status subresource
// (Conditions and ObservedGeneration, as v1alpha1.PolicyStatus).
type ObjectStatus struct {
	Key
	Service    string `json:"service,omitempty"`
	Generation int64  `json:"generation,omitempty"`
	// Source is the file the object came from (file mode).
	Source     string             `json:"source,omitempty"`
	Conditions []metav1.Condition `json:"conditions"`
}

// Accepted reports whether the object is in force.
func (s ObjectStatus) Accepted() bool {
	for _, c := range s.Conditions {
		if c.Type == v1alpha1.ConditionAccepted {
			return c.Status == metav1.ConditionTrue
		}
	}
	return false
}

// PolicyStatus is the status to write back for the object.
func (s ObjectStatus) PolicyStatus() v1alpha1.PolicyStatus {
	return v1alpha1.PolicyStatus{ObservedGeneration: s.Generation, Conditions: s.Conditions}
}

// Message is the reason an object is not accepted, or "".
func (s ObjectStatus) Message() string {
	for _, c := range s.Conditions {
		if c.Type == v1alpha1.ConditionAccepted && c.Status != metav1.ConditionTrue {
			return c.Reason + ": " + c.Message
		}
	}
	return ""
}

func keyOf(kind string, m *metav1.ObjectMeta) Key {
	ns := m.Namespace
	if ns == "" {
		ns = "default"
	}
	return Key{Kind: kind, Namespace: ns, Name: m.Name}
}

func sortStatuses(s []ObjectStatus) {
	sort.Slice(s, func(i, j int) bool {
		a, b := s[i].Key, s[j].Key
		if a.Kind != b.Kind {
			return a.Kind < b.Kind
		}
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		return a.Name < b.Name
	})
}
