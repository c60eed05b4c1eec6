package xds

import (
	"crypto/sha256"
	"encoding/binary"
	"strconv"
)

// Endpoint versions are derived from content, never from time or a
// counter, so that a control plane restarted on the same catalog sends
// the same version strings and nothing a proxy already holds.
//
// Each assignment contributes a 64-bit digest of its name and content
// hash; a set's version is the XOR of its members' digests. XOR makes the
// version order-independent and lets it be kept up to date in O(changed)
// rather than re-hashed over a thousand names per proxy per change.
//
//   - delta: every resource carries its own content hash (endpointEntry.hash);
//     system_version_info is the fold of the whole served set.
//   - SotW: a response's version is the fold of exactly what the proxy
//     holds after it (its subscribed assignments), so a proxy that
//     reconnects with that version is known to hold them all.

// sotwFoldKey is the entry of a SotW subscription's returned-versions map
// that holds the fold of the other entries. Assignment names are never
// empty, and go-control-plane only stores the map and hands it back, so
// the key carries the fold from one response to the next without a
// per-stream table that would need its own cleanup.
const sotwFoldKey = ""

// digest is an assignment's contribution to a set version.
func digest(name, hash string) uint64 {
	h := sha256.New()
	h.Write([]byte(name))
	h.Write([]byte{0})
	h.Write([]byte(hash))
	var sum [sha256.Size]byte
	return binary.BigEndian.Uint64(h.Sum(sum[:0]))
}

// foldString is the version string of a fold.
func foldString(f uint64) string { return strconv.FormatUint(f, 36) }

// parseFold reads a fold back from a version string.
func parseFold(s string) (uint64, bool) {
	f, err := strconv.ParseUint(s, 36, 64)
	return f, err == nil
}
