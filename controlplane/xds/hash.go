package xds

import (
	"crypto/sha256"
	"encoding/hex"
	"sort"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
)

// Hashed is a resource with the content hash of its deterministic
// encoding. Resources are immutable once hashed: the same pointer is shared
// by every proxy's snapshot.
type Hashed struct {
	Name     string
	Resource types.Resource
	Hash     string
}

// HashResource returns a content hash of a resource: exactly the version
// go-control-plane's delta server puts on the wire for it. The version
// maps of snapshots must hold the same string, or a delta proxy that
// reconnects naming what it holds (initial_resource_versions) would be
// compared against another hash and sent everything again.
func HashResource(r types.Resource) (string, error) {
	b, err := cache.MarshalResource(r)
	if err != nil {
		return "", err
	}
	return cache.HashResource(b), nil
}

// HashAll hashes resources, naming each. Hashes already known for a
// resource (memo, which may be nil) are reused: shared resources are
// hashed once, not once per proxy or per change.
func HashAll(rs []types.Resource, memo map[types.Resource]string) ([]Hashed, error) {
	out := make([]Hashed, 0, len(rs))
	for _, r := range rs {
		h, ok := memo[r]
		if !ok {
			var err error
			if h, err = HashResource(r); err != nil {
				return nil, err
			}
		}
		out = append(out, Hashed{Name: cache.GetResourceName(r), Resource: r, Hash: h})
	}
	return out, nil
}

// setVersion is the version of a whole set of resources of one type: a hash
// of their names and content hashes. Equal content gives an equal version
// across restarts, so a restarted control plane pushes nothing new.
func setVersion(items []Hashed) string {
	sorted := append([]Hashed(nil), items...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })
	h := sha256.New()
	for _, it := range sorted {
		h.Write([]byte(it.Name))
		h.Write([]byte{0})
		h.Write([]byte(it.Hash))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
}

// Fingerprint is a short content hash of b.
func Fingerprint(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:12])
}
