package registry

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"

	"medmesh/internal/backoff"
)

// Other sites' services reach a site through Consul cluster peering: each
// site is its own Consul datacenter, a peer exports services to it
// (exported-services config entries), and the site's Consul keeps the
// imported instances and their health, readable with the `peer` query
// parameter. medmesh replicates nothing itself; it reads what Consul
// imported.
//
// "Unreachable" is never read as "deleted". When a peering stops being
// ACTIVE (the uplink is cut, the peer is down), Consul keeps the imported
// instances as they were last heard of, and so does this source: the
// peer's imports are marked stale and keep being served for
// ConsulOptions.PeerStaleGrace, after which they are withdrawn from the
// catalog (a site that has not heard from a peer for that long should not
// keep sending calls there) and the status says so. Only an ACTIVE
// peering's list of imported services is authoritative: a service the
// peer stops exporting then goes. A peering the operator deletes takes its
// imports with it.

// PeerStatus is what this site knows of one Consul cluster peering.
type PeerStatus struct {
	// Name is the local name of the peering.
	Name string `json:"name"`
	// Site is the peer's site: its Consul datacenter.
	Site string `json:"site"`
	// State is Consul's: ACTIVE, FAILING, PENDING, ESTABLISHING, ...
	State string `json:"state"`
	// LastReceive is when Consul last heard from the peer.
	LastReceive time.Time `json:"lastReceive,omitzero"`
	// Imported are the services imported from the peer.
	Imported []string `json:"imported,omitempty"`
	// Instances counts the imported instances served.
	Instances int `json:"instances"`
	// StaleSince is when the peering stopped being ACTIVE; zero while it
	// is active. Stale imports are served as last heard of.
	StaleSince time.Time `json:"staleSince,omitzero"`
	// Withdrawn: stale for longer than the grace period; its instances are
	// no longer in the catalog.
	Withdrawn bool `json:"withdrawn,omitempty"`
}

// Stale reports whether the peering is not ACTIVE.
func (p PeerStatus) Stale() bool { return !p.StaleSince.IsZero() }

// peer is the peer watcher's state for one peering.
type peer struct {
	status   PeerStatus
	services map[string]*importWatch
}

// importWatch follows one imported service's instances.
type importWatch struct {
	cancel    context.CancelFunc
	instances []RawInstance
	read      bool // read at least once (or failed once)
}

type importResult struct {
	peer, service string
	instances     []RawInstance
	err           error
}

// watchPeers follows every peering and the instances of the services each
// imports, and sends the imported instances to serve (all peers together)
// whenever they change. The first set goes out once the peerings were
// listed and every imported service read once; if the peerings cannot be
// listed at all (a Consul without peering, or a token without
// peering:read), an empty set goes out so that the local mesh is never
// held back by peers.
func (c *Consul) watchPeers(ctx context.Context, out chan<- watchEvent) {
	peers := map[string]*peer{}
	results := make(chan importResult, 16)
	tick := time.NewTicker(c.opts.PeerPoll)
	defer tick.Stop()
	listed, sentOnce := false, false
	var lastSent string
	bo := backoff.Backoff{Min: c.opts.BackoffMin, Max: c.opts.BackoffMax}
	var retryAt time.Time
	send := func() {
		for _, p := range peers {
			for _, w := range p.services {
				if !w.read {
					return // not complete yet
				}
			}
		}
		raw, statuses := c.importedView(peers)
		var sites []string
		for _, st := range statuses {
			if !slices.Contains(sites, st.Site) {
				sites = append(sites, st.Site)
			}
		}
		slices.Sort(sites)
		watching := 0
		for _, p := range peers {
			watching += len(p.services)
		}
		key := fingerprintRaw(raw) + strings.Join(sites, ",") + "|" + strconv.Itoa(watching)
		c.mu.Lock()
		c.status.Peers = statuses
		c.mu.Unlock()
		if key == lastSent && sentOnce {
			return
		}
		select {
		case out <- watchEvent{imports: raw, importsSet: true, peerSites: sites, importWatches: watching}:
			lastSent, sentOnce = key, true
		case <-ctx.Done():
		}
	}
	list := func() {
		if time.Now().Before(retryAt) {
			return
		}
		lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		ps, _, err := c.opts.Client.Peerings().List(lctx, nil)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			retryAt = time.Now().Add(bo.Next())
			c.setErr("listing peerings", err)
			if !listed {
				c.log.Warn("cannot list Consul peerings; serving local services only until it answers", "err", err)
				listed = true
				send() // no peers known: an empty set, so local services are not held back
			}
			return
		}
		bo.Reset()
		listed = true
		c.updatePeers(ctx, peers, ps, results)
		send()
	}
	list()
	for {
		select {
		case <-ctx.Done():
			for _, p := range peers {
				for _, w := range p.services {
					w.cancel()
				}
			}
			return
		case <-tick.C:
			list()
		case r := <-results:
			p, ok := peers[r.peer]
			if !ok {
				continue
			}
			w, ok := p.services[r.service]
			if !ok {
				continue
			}
			if r.err == nil {
				site := p.status.Site
				for i := range r.instances {
					r.instances[i].Peer, r.instances[i].PeerSite = r.peer, site
				}
				w.instances = r.instances
			}
			w.read = true
			send()
		}
	}
}

// updatePeers applies a listing of the peerings: new peers and imported
// services get watchers, and what an ACTIVE peer no longer exports (or a
// deleted peering) goes. A peering that is not ACTIVE keeps everything.
func (c *Consul) updatePeers(ctx context.Context, peers map[string]*peer, ps []*api.Peering, results chan<- importResult) {
	now := time.Now()
	seen := map[string]bool{}
	for _, pg := range ps {
		if pg == nil || pg.State == api.PeeringStateDeleting || pg.State == api.PeeringStateTerminated {
			continue
		}
		seen[pg.Name] = true
		p, ok := peers[pg.Name]
		if !ok {
			p = &peer{status: PeerStatus{Name: pg.Name}, services: map[string]*importWatch{}}
			peers[pg.Name] = p
		}
		p.status.State = string(pg.State)
		p.status.Site = pg.Remote.Datacenter
		if p.status.Site == "" {
			p.status.Site = pg.Name
		}
		if t := pg.StreamStatus.LastReceive; t != nil {
			p.status.LastReceive = *t
		}
		imported := slices.Sorted(slices.Values(pg.StreamStatus.ImportedServices))
		active := pg.State == api.PeeringStateActive
		if active {
			if p.status.Withdrawn {
				c.log.Info("peer is back; serving its imported services again", "peer", pg.Name, "site", p.status.Site)
			}
			p.status.StaleSince, p.status.Withdrawn = time.Time{}, false
			keep := map[string]bool{}
			for _, s := range imported {
				keep[s] = true
			}
			for s, w := range p.services {
				if !keep[s] {
					w.cancel()
					delete(p.services, s)
				}
			}
		} else {
			if p.status.StaleSince.IsZero() {
				p.status.StaleSince = now
				if !p.status.LastReceive.IsZero() && p.status.LastReceive.Before(now) {
					p.status.StaleSince = p.status.LastReceive
				}
				c.log.Warn("peer unreachable; serving its imported services as last heard of",
					"peer", pg.Name, "site", p.status.Site, "state", p.status.State, "grace", c.opts.PeerStaleGrace.String())
			}
			if !p.status.Withdrawn && now.Sub(p.status.StaleSince) >= c.opts.PeerStaleGrace {
				p.status.Withdrawn = true
				c.log.Warn("peer unreachable for the whole grace period; its imported services are withdrawn",
					"peer", pg.Name, "site", p.status.Site, "staleSince", p.status.StaleSince.UTC().Format(time.RFC3339))
			}
		}
		for _, s := range imported {
			if _, ok := p.services[s]; !ok {
				wctx, cancel := context.WithCancel(ctx)
				p.services[s] = &importWatch{cancel: cancel}
				go c.watchImport(wctx, pg.Name, s, results)
			}
		}
		p.status.Imported = slices.Sorted(maps.Keys(p.services))
	}
	for name, p := range peers {
		if !seen[name] {
			c.log.Warn("peering deleted; its imported services go", "peer", name)
			for _, w := range p.services {
				w.cancel()
			}
			delete(peers, name)
		}
	}
}

// importedView is what to serve: every instance of every peer that is not
// withdrawn, and the peers' statuses sorted by name.
func (c *Consul) importedView(peers map[string]*peer) ([]RawInstance, []PeerStatus) {
	var raw []RawInstance
	statuses := make([]PeerStatus, 0, len(peers))
	for _, p := range peers {
		n := 0
		if !p.status.Withdrawn {
			for _, w := range p.services {
				raw = append(raw, w.instances...)
				n += len(w.instances)
			}
		}
		st := p.status
		st.Instances = n
		statuses = append(statuses, st)
	}
	slices.SortFunc(statuses, func(a, b PeerStatus) int { return strings.Compare(a.Name, b.Name) })
	return raw, statuses
}

// watchImport follows one imported service with blocking queries (the
// `peer` parameter reads what Consul imported from that peer).
func (c *Consul) watchImport(ctx context.Context, peerName, service string, out chan<- importResult) {
	c.watchHealth(ctx, service, peerName, func(entries []*api.ServiceEntry, err error) bool {
		r := importResult{peer: peerName, service: service, err: err}
		if err != nil {
			c.setErr("reading "+service+" imported from "+peerName, err)
		}
		for _, e := range entries {
			r.instances = append(r.instances, rawFromEntry(e))
		}
		select {
		case out <- r:
			return true
		case <-ctx.Done():
			return false
		}
	})
}

// fingerprintRaw identifies a set of instances whatever their order.
func fingerprintRaw(raw []RawInstance) string {
	b, _ := json.Marshal(sortedRaw(raw)) // plain structs: cannot fail
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
