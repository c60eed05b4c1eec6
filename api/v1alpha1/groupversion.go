package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GroupVersion is the API group and version of medmesh's policies.
var GroupVersion = schema.GroupVersion{Group: "policy.medmesh.io", Version: "v1alpha1"}

// Kinds, as they appear in `kind:`.
const (
	KindMeshRoute       = "MeshRoute"
	KindMeshDestination = "MeshDestination"
	KindMeshAccess      = "MeshAccess"
)

var (
	// SchemeBuilder registers the types with a runtime.Scheme (client-go
	// and controller-runtime both take one).
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)
	// AddToScheme adds this group's types to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion,
		&MeshRoute{}, &MeshRouteList{},
		&MeshDestination{}, &MeshDestinationList{},
		&MeshAccess{}, &MeshAccessList{},
	)
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
