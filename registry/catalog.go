// Package registry holds the sources of clinical services and their
// endpoints: a Consul agent watched with blocking queries, or a YAML catalog
// file. Every source emits complete, immutable Catalog values; consumers
// never see a half-updated catalog.
package registry

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"slices"
	"sort"
	"strings"
	"time"
)

// Kind is the clinical kind of a service (CONTRACT.md `medmesh-kind`).
type Kind string

// Kinds of clinical services.
const (
	KindEMR     Kind = "emr"
	KindHIS     Kind = "his"
	KindImaging Kind = "imaging"
	KindVitals  Kind = "vitals"
	KindWebRTC  Kind = "webrtc"
	KindGeneric Kind = "generic"
)

// Protocol is the application protocol a service speaks (`medmesh-protocol`).
type Protocol string

// Protocols.
const (
	ProtocolHTTP  Protocol = "http"
	ProtocolHTTP2 Protocol = "http2"
	ProtocolGRPC  Protocol = "grpc"
	ProtocolTCP   Protocol = "tcp"
)

// IsHTTP2 reports whether upstream connections must use HTTP/2.
func (p Protocol) IsHTTP2() bool { return p == ProtocolHTTP2 || p == ProtocolGRPC }

// IsHTTP reports whether the protocol is routed at layer 7.
func (p Protocol) IsHTTP() bool { return p != ProtocolTCP }

// LBPolicy is the load-balancing algorithm for a service (`medmesh-lb`).
type LBPolicy string

// Load-balancing policies.
const (
	LBRoundRobin   LBPolicy = "round_robin"
	LBLeastRequest LBPolicy = "least_request"
	LBRingHash     LBPolicy = "ring_hash"
	LBMaglev       LBPolicy = "maglev"
	LBRandom       LBPolicy = "random"
)

// Health is the health of one instance as the mesh sees it.
type Health string

// Health values. Critical instances are kept in the catalog (status pages
// show them) but never sent to proxies.
const (
	HealthPassing  Health = "passing"
	HealthWarning  Health = "warning"
	HealthCritical Health = "critical"
)

// Locality places an instance for zone-aware routing and site residency.
type Locality struct {
	Region string `json:"region,omitempty"`
	Zone   string `json:"zone,omitempty"`
	Site   string `json:"site,omitempty"`
}

// Instance is one registered instance of a service.
type Instance struct {
	// ID is the Consul service ID; Envoy sidecars use it as node.id.
	ID       string   `json:"id"`
	Node     string   `json:"node,omitempty"`
	Address  string   `json:"address"`
	Port     int      `json:"port"`
	Health   Health   `json:"health"`
	Weight   int      `json:"weight"`
	Locality Locality `json:"locality"`
	// AppPort is where the local application listens behind an Envoy
	// sidecar (meta `medmesh-app-port`); 0 means the instance port.
	AppPort int `json:"appPort,omitempty"`
	// Meta is the instance's service meta (Consul `Meta`), which route
	// policies select subsets by (e.g. `version: v2` for a canary).
	Meta map[string]string `json:"meta,omitempty"`
	// Peer is the Consul cluster peering the instance was imported
	// through: another site's instance. Empty for this site's own.
	Peer string `json:"peer,omitempty"`
}

// Service is a named clinical service and all of its instances.
type Service struct {
	Name      string   `json:"name"`
	Namespace string   `json:"namespace"`
	Kind      Kind     `json:"kind"`
	Protocol  Protocol `json:"protocol"`
	PHI       bool     `json:"phi"`
	LB        LBPolicy `json:"lb"`
	// Permissive: plaintext accepted beside mTLS during a migration.
	Permissive bool `json:"permissive,omitempty"`
	// ExplicitScope: its proxies are sent only the services whose
	// authorization names it (meta medmesh-scope=explicit).
	ExplicitScope bool       `json:"explicitScope,omitempty"`
	Instances     []Instance `json:"instances"`
}

// Catalog is a complete, immutable view of every service. Treat it as
// read-only: sources build a new value on every change.
type Catalog struct {
	Services []Service `json:"services"`
	// Intentions say which services may call which (Consul intentions).
	Intentions []Intention `json:"intentions,omitempty"`
	// PeerSites are the sites this one is peered with (Consul cluster
	// peering), whether or not they export anything: callers from them
	// may be admitted where residency allows.
	PeerSites []string `json:"peerSites,omitempty"`
	// Observed is when the source first saw a change this catalog is the
	// first to carry (zero when unknown): the start of a change's journey
	// to the proxies, for the control plane's per-stage latency metric.
	// Not content: excluded from Hash and from the saved catalog.
	Observed time.Time `json:"-"`
	// hash is Hash, when the source computed it before handing the
	// catalog over (it is immutable from then on): a hospital catalog's
	// hash is a JSON encoding of every instance, too costly to do twice
	// per change.
	hash string
}

// Intention allows or denies calls from a source service ("*": any) to a
// destination service. It may name services not registered (yet).
type Intention struct {
	Source      string `json:"source"`
	Destination string `json:"destination"`
	Allow       bool   `json:"allow"`
	// Permissions, when present, replace Allow: L7 rules for HTTP
	// requests from Source (Consul intentions with permissions).
	Permissions []IntentionPermission `json:"permissions,omitempty"`
}

// IntentionPermission allows or denies the HTTP requests it matches.
// Empty match fields match anything.
type IntentionPermission struct {
	Allow      bool     `json:"allow"`
	PathExact  string   `json:"pathExact,omitempty"`
	PathPrefix string   `json:"pathPrefix,omitempty"`
	PathRegex  string   `json:"pathRegex,omitempty"`
	Methods    []string `json:"methods,omitempty"`
	// Headers says the rule also matches on request headers (or a JWT),
	// which medmesh does not translate; see ir.applyIntentions.
	Headers bool `json:"headers,omitempty"`
}

// Service returns the named service.
func (c *Catalog) Service(name string) (*Service, bool) {
	i := sort.Search(len(c.Services), func(i int) bool { return c.Services[i].Name >= name })
	if i < len(c.Services) && c.Services[i].Name == name {
		return &c.Services[i], true
	}
	return nil, false
}

// Instance finds an instance by its service ID.
func (c *Catalog) Instance(id string) (*Service, *Instance, bool) {
	for si := range c.Services {
		s := &c.Services[si]
		for ii := range s.Instances {
			if s.Instances[ii].ID == id {
				return s, &s.Instances[ii], true
			}
		}
	}
	return nil, nil, false
}

// InstanceCount is the number of instances across all services.
func (c *Catalog) InstanceCount() int {
	n := 0
	for _, s := range c.Services {
		n += len(s.Instances)
	}
	return n
}

// Hash is a content hash of the catalog, stable across sources and runs.
func (c *Catalog) Hash() string {
	if c.hash != "" {
		return c.hash
	}
	return c.computeHash()
}

func (c *Catalog) computeHash() string {
	b, _ := json.Marshal(c) // plain structs: cannot fail
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// normalize sorts services and instances so equal catalogs compare and hash
// equal whatever order the source listed them in.
func (c *Catalog) normalize() {
	sort.Slice(c.Services, func(i, j int) bool { return c.Services[i].Name < c.Services[j].Name })
	c.sortIntentions()
	for i := range c.Services {
		inst := c.Services[i].Instances
		slices.SortFunc(inst, func(a, b Instance) int { return compareInstances(&a, &b) })
	}
}

func (c *Catalog) sortIntentions() {
	sort.Slice(c.Intentions, func(i, j int) bool {
		a, b := c.Intentions[i], c.Intentions[j]
		if a.Destination != b.Destination {
			return a.Destination < b.Destination
		}
		return a.Source < b.Source
	})
}

// compareInstances orders instances by ID, then by where they run: Consul
// IDs are unique per agent (and per site) only, so two nodes may both
// register "emr", and their order must not depend on the order a source
// listed them in.
func compareInstances(a, b *Instance) int {
	return cmp.Or(strings.Compare(a.ID, b.ID), strings.Compare(a.Peer, b.Peer), strings.Compare(a.Node, b.Node),
		strings.Compare(a.Address, b.Address), cmp.Compare(a.Port, b.Port))
}
