package xds

import (
	"maps"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
)

// layeredSnapshot is a proxy's snapshot as two layers per type: a set
// shared with every proxy that has the same content (interned by content
// hash), and the few resources that are the proxy's own (its inbound
// listener, route and local-app cluster). Without the split, a thousand
// sidecars of a thousand different services would each hold their own
// copy of the thousand-cluster map that they all share.
//
// It implements go-control-plane's cache.ResourceSnapshot, the interface
// the SnapshotCache offers for snapshots of an application's own making.
type layeredSnapshot struct {
	layers map[string]layer // by type URL
}

type layer struct {
	version string
	shared  *internedSet // may be nil
	own     map[string]types.ResourceWithTTL
	ownVM   map[string]string
}

var _ cache.ResourceSnapshot = (*layeredSnapshot)(nil)

// GetVersion implements cache.ResourceSnapshot.
func (s *layeredSnapshot) GetVersion(typeURL string) string { return s.layers[typeURL].version }

// GetResourcesAndTTL implements cache.ResourceSnapshot. The merged map is
// built per call; the cache asks once per request of the type.
func (s *layeredSnapshot) GetResourcesAndTTL(typeURL string) map[string]types.ResourceWithTTL {
	l, ok := s.layers[typeURL]
	if !ok {
		return nil
	}
	if l.shared == nil {
		return l.own
	}
	if len(l.own) == 0 {
		return l.shared.res.Items
	}
	out := make(map[string]types.ResourceWithTTL, len(l.shared.res.Items)+len(l.own))
	maps.Copy(out, l.shared.res.Items)
	maps.Copy(out, l.own)
	return out
}

// GetResources implements cache.ResourceSnapshot.
func (s *layeredSnapshot) GetResources(typeURL string) map[string]types.Resource {
	withTTL := s.GetResourcesAndTTL(typeURL)
	if withTTL == nil {
		return nil
	}
	out := make(map[string]types.Resource, len(withTTL))
	for k, v := range withTTL {
		out[k] = v.Resource
	}
	return out
}

// ConstructVersionMap implements cache.ResourceSnapshot: the version maps
// are built from content hashes when the snapshot is, so there is nothing
// left to do.
func (s *layeredSnapshot) ConstructVersionMap() error { return nil }

// GetVersionMap implements cache.ResourceSnapshot.
func (s *layeredSnapshot) GetVersionMap(typeURL string) map[string]string {
	l, ok := s.layers[typeURL]
	if !ok {
		return nil
	}
	if l.shared == nil {
		return l.ownVM
	}
	if len(l.ownVM) == 0 {
		return l.shared.versionMap
	}
	out := make(map[string]string, len(l.shared.versionMap)+len(l.ownVM))
	maps.Copy(out, l.shared.versionMap)
	maps.Copy(out, l.ownVM)
	return out
}

// resources returns the merged view in the form go-control-plane's
// reference helpers take.
func (s *layeredSnapshot) resources() [types.UnknownType]cache.Resources {
	var out [types.UnknownType]cache.Resources
	for typ, l := range s.layers {
		out[cache.GetResponseType(typ)] = cache.Resources{Version: l.version, Items: s.GetResourcesAndTTL(typ)}
	}
	return out
}
