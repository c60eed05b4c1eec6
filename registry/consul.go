package registry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"

	"medmesh/internal/backoff"
	"medmesh/internal/latest"
)

// ConsulOptions configures a Consul source.
type ConsulOptions struct {
	// Client talks to the Consul agent's HTTP API.
	Client *api.Client
	// Coalesce is how long a burst of changes is gathered into one catalog
	// (Consul's own proxycfg waits 200ms for the same reason; medmesh's
	// control loop coalesces again, so this can be shorter).
	Coalesce time.Duration
	// WaitTime bounds each blocking query (Consul caps it at 10m).
	WaitTime time.Duration
	// BackoffMin and BackoffMax bound retries after errors.
	BackoffMin, BackoffMax time.Duration
	// Fetchers bounds concurrent reads of service health.
	Fetchers int
	// ServiceWatches: while this site's services and the services
	// imported from peers (each followed by a blocking query of its own,
	// peers.go) number at most this many, each of this site's services is
	// followed with a blocking query of its own instead of the watch of
	// every check (consulwatch.go). 0 means DefaultServiceWatches;
	// negative, never.
	ServiceWatches int
	// PeerPoll is how often the peerings are listed (their state and the
	// services each imports); imported instances themselves are followed
	// with blocking queries.
	PeerPoll time.Duration
	// PeerStaleGrace is how long a peer's imports are served, as last
	// heard of, after the peering stops being ACTIVE (peers.go).
	PeerStaleGrace time.Duration
	Logger         *slog.Logger
}

// DefaultPeerStaleGrace is how long an unreachable peer's services keep
// being served: a day covers an uplink cut through a night shift and its
// repair, while endpoints unheard of for longer are more likely gone than
// alive (outlier detection skips dead ones within the grace anyway).
const DefaultPeerStaleGrace = 24 * time.Hour

// Consul watches the Consul catalog with blocking queries (index-based
// long polls): the service list, the nodes and the service intentions,
// and the health of the services in one of two ways.
//
// While Consul lists at most ServiceWatches services, imported ones
// included (a site's usual size), each service has a blocking health
// query of its own: a change wakes only its service's query, which
// answers with that service alone (consulwatch.go).
//
// Above that, one query watches every health check in any state: Consul
// limits each client address to 200 concurrent HTTP connections by
// default, and a hospital group easily runs more services than that. A
// change to a check re-reads only the services it belongs to, and when
// only check statuses moved not even those: their health is recomputed
// from the checks answer (consulhealth.go). A change to the service list
// or to the nodes (which can move locality) re-reads every service, a
// bounded number at a time.
//
// A change after a quiet spell is emitted at once; only bursts wait for
// the Coalesce window.
//
// Errors back off with jitter and never clear what was last seen: a
// registry outage keeps the mesh as it was.
type Consul struct {
	opts ConsulOptions
	log  *slog.Logger

	mu     sync.Mutex
	status SourceStatus
	warned map[string]bool
}

// NewConsul returns a Consul source with defaults filled in.
func NewConsul(opts ConsulOptions) *Consul {
	if opts.Coalesce <= 0 {
		opts.Coalesce = 50 * time.Millisecond
	}
	if opts.WaitTime <= 0 {
		opts.WaitTime = 5 * time.Minute
	}
	if opts.BackoffMin <= 0 {
		opts.BackoffMin = 250 * time.Millisecond
	}
	if opts.BackoffMax <= 0 {
		opts.BackoffMax = 30 * time.Second
	}
	if opts.Fetchers <= 0 {
		opts.Fetchers = 16
	}
	if opts.ServiceWatches == 0 {
		opts.ServiceWatches = DefaultServiceWatches
	}
	if opts.PeerPoll <= 0 {
		opts.PeerPoll = 2 * time.Second
	}
	if opts.PeerStaleGrace <= 0 {
		opts.PeerStaleGrace = DefaultPeerStaleGrace
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Consul{opts: opts, log: opts.Logger.With("source", "consul"), warned: map[string]bool{}}
}

// Status returns the source's current status.
func (c *Consul) Status() SourceStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.status
}

func (c *Consul) setErr(what string, err error) {
	c.mu.Lock()
	c.status.LastError = fmt.Sprintf("%s: %v", what, err)
	c.status.LastErrorAt = time.Now()
	c.mu.Unlock()
}

// Name identifies the source in logs and status.
func (c *Consul) Name() string { return "consul" }

// watchEvent is what a long poll reports to the main loop.
type watchEvent struct {
	intentions []Intention        // intentions changed (non-nil, maybe empty)
	services   map[string]bool    // service list changed
	checks     []*api.HealthCheck // checks changed
	nodes      bool               // nodes changed
	// imports are other sites' instances to serve (peers.go); set with
	// importsSet, since an empty set is an answer too.
	imports    []RawInstance
	importsSet bool
	peerSites  []string
	// importWatches is how many imported services are followed, each
	// with a blocking query (an HTTP connection) of its own.
	importWatches int
}

type fetchResult struct {
	name      string
	instances []fetchedInstance
	err       error
	// watch is set on answers of a service's own watch
	// (consulwatch.go), which retries by itself, and nil on one-off
	// reads.
	watch *watch
}

// Run watches Consul until ctx ends, sending each new complete catalog on
// out. The first catalog is sent only once the service list and the health
// of every listed service have been read, so a proxy never receives a
// half-read registry. out is written "latest wins": a slow reader gets the
// newest catalog, never a backlog.
func (c *Consul) Run(ctx context.Context, out chan *Catalog) error {
	events := make(chan watchEvent, 16)
	go c.poll(ctx, "listing services", events, func(q *api.QueryOptions) (watchEvent, uint64, error) {
		svcs, meta, err := c.opts.Client.Catalog().Services(q)
		if err != nil {
			return watchEvent{}, 0, err
		}
		l := make(map[string]bool, len(svcs))
		for name := range svcs {
			if name != consulService {
				l[name] = true
			}
		}
		return watchEvent{services: l}, meta.LastIndex, nil
	})
	readChecks := func(q *api.QueryOptions) (watchEvent, uint64, error) {
		checks, meta, err := c.opts.Client.Health().State(api.HealthAny, q)
		if err != nil {
			return watchEvent{}, 0, err
		}
		return watchEvent{checks: checks}, meta.LastIndex, nil
	}
	go c.poll(ctx, "listing intentions", events, func(q *api.QueryOptions) (watchEvent, uint64, error) {
		entries, meta, err := c.opts.Client.ConfigEntries().List(api.ServiceIntentions, q)
		if err != nil {
			return watchEvent{}, 0, err
		}
		return watchEvent{intentions: intentionsFrom(entries)}, meta.LastIndex, nil
	})
	go c.watchPeers(ctx, events)
	go c.poll(ctx, "listing nodes", events, func(q *api.QueryOptions) (watchEvent, uint64, error) {
		_, meta, err := c.opts.Client.Catalog().Nodes(q)
		if err != nil {
			return watchEvent{}, 0, err
		}
		return watchEvent{nodes: true}, meta.LastIndex, nil
	})

	var (
		intentions []Intention
		imported   []RawInstance
		importsSet bool
		peerSites  []string
		listed     map[string]bool
		entries    = map[string][]RawInstance{}
		fetched    = map[string][]fetchedInstance{} // as last read, for the health fast path
		healthOnly = map[string]bool{}              // dirty services whose checks' statuses alone moved
		lastChecks []*api.HealthCheck               // the latest checks answer
		checkIdx   *checkIndex                      // lastChecks indexed, when needed
		checkSig   = map[string]string{}            // service -> fingerprint of its checks
		nodeSig    = map[string]string{}            // node -> fingerprint of its node checks
		dirty      = map[string]bool{}
		inflight   = map[string]bool{}
		results    = make(chan fetchResult, c.opts.Fetchers)
		watches    = newServiceWatches(ctx, c, results)
		builds     = newServiceBuilds()
		stopChecks context.CancelFunc // the watch of every check, while it runs
		timer      <-chan time.Time
		retry      <-chan time.Time
		lastHash   string
		bo         = backoff.Backoff{Min: c.opts.BackoffMin, Max: c.opts.BackoffMax}
		// firstSeen is when the oldest watch answer not yet in an emitted
		// catalog arrived (Catalog.Observed); lastFire when the timer last
		// fired.
		firstSeen, lastFire time.Time
	)
	// importWatches counts toward ServiceWatches: Consul's limit on
	// connections is per client address, the imports' and ours.
	var importWatches int
	// Coalescing is on the trailing edge only under load: a change after
	// a quiet spell is emitted as soon as it is read, and later ones wait
	// until Coalesce has passed since the last emission, so a burst still
	// becomes one catalog per window (waiting on every change was most of
	// the latency of a single change on an idle registry).
	arm := func() {
		if timer == nil {
			timer = time.After(coalesceDelay(lastFire, c.opts.Coalesce, time.Now()))
		}
	}
	// Health is followed service by service while the list and the
	// imports are short together, by the watch of every check otherwise.
	followHealth := func() {
		if c.opts.ServiceWatches > 0 && len(listed)+importWatches <= c.opts.ServiceWatches {
			if stopChecks != nil {
				stopChecks()
				stopChecks, lastChecks, checkIdx = nil, nil, nil
				clear(checkSig)
				clear(nodeSig)
			}
			for _, name := range watches.follow(listed) {
				inflight[name] = true // complete once its first answer is in
			}
			c.setHealthWatch(healthWatchPerService)
			return
		}
		c.setHealthWatch(healthWatchAllChecks)
		for _, name := range watches.stop() {
			delete(inflight, name)
			dirty[name] = true
		}
		if stopChecks == nil {
			var cctx context.Context
			cctx, stopChecks = context.WithCancel(ctx)
			go c.poll(cctx, "reading health checks", events, readChecks)
		}
	}
	markAll := func() {
		for name := range listed {
			dirty[name] = true
		}
		clear(healthOnly) // a registration may have changed anything: read again
	}
	// markHealth marks a service whose checks changed; it is read again
	// only if something else already asked for that.
	markHealth := func(name string) {
		if !dirty[name] {
			healthOnly[name] = true
		}
		dirty[name] = true
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case ev := <-events:
			if firstSeen.IsZero() {
				firstSeen = time.Now()
			}
			switch {
			case ev.importsSet:
				imported, importsSet, peerSites = ev.imports, true, ev.peerSites
				builds.touchAll()
				arm()
				if ev.importWatches != importWatches {
					importWatches = ev.importWatches
					if listed != nil {
						followHealth()
					}
				}
			case ev.intentions != nil:
				intentions = ev.intentions // non-nil once read, even if empty
				arm()
			case ev.services != nil:
				listed = ev.services
				for name := range entries {
					if !listed[name] {
						delete(entries, name)
						builds.touch(name)
						delete(fetched, name)
						delete(checkSig, name)
						delete(dirty, name)
					}
				}
				followHealth()
				if !watches.active() {
					// A registration can change meta, address or port of
					// any service and the list does not say which: read
					// them all. (A service's own watch sees its changes.)
					markAll()
				}
				arm() // a service gone is a new catalog too
			case ev.nodes:
				if !watches.active() {
					markAll() // a service's own watch sees its nodes too
				}
			case ev.checks != nil:
				if stopChecks == nil {
					continue // an answer from before the switch to watches
				}
				lastChecks, checkIdx = ev.checks, nil
				svcSig, nSig := checkFingerprints(ev.checks)
				for name, sig := range svcSig {
					if checkSig[name] != sig {
						checkSig[name] = sig
						if listed[name] {
							markHealth(name)
						}
					}
				}
				for name := range checkSig {
					if _, ok := svcSig[name]; !ok {
						delete(checkSig, name)
						if listed[name] {
							markHealth(name)
						}
					}
				}
				// A node check (e.g. serfHealth) affects every service on it.
				for node, sig := range nSig {
					if nodeSig[node] != sig {
						nodeSig[node] = sig
						for name, inst := range entries {
							for _, in := range inst {
								if in.Node == node {
									markHealth(name)
								}
							}
						}
					}
				}
			}
		case r := <-results:
			if watches.stale(r) {
				continue // its service is followed otherwise now
			}
			if r.watch != nil && firstSeen.IsZero() {
				firstSeen = time.Now() // a watch answer is a change seen
			}
			delete(inflight, r.name)
			if r.err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				c.setErr("reading health of "+r.name, r.err)
				c.log.Warn("cannot read service health; keeping its last known instances", "service", r.name, "err", r.err)
				if r.watch != nil {
					// The watch retries by itself; until it has read the
					// service once, no catalog is complete.
					if _, read := fetched[r.name]; !read && listed[r.name] {
						inflight[r.name] = true
					}
					continue
				}
				dirty[r.name] = true
				if retry == nil {
					retry = time.After(bo.Next())
				}
				continue
			}
			bo.Reset()
			if listed[r.name] {
				fetched[r.name] = r.instances
				raws := make([]RawInstance, len(r.instances))
				for i := range r.instances {
					raws[i] = r.instances[i].raw
				}
				entries[r.name] = raws
				builds.touch(r.name)
			}
			arm()
		case <-retry:
			retry = nil
		case <-timer:
			timer, lastFire = nil, time.Now()
			if listed == nil || intentions == nil || !importsSet || len(dirty) > 0 || len(inflight) > 0 {
				continue // not every service, intention and peer has been read yet
			}
			cat, warns := builds.build(entries, imported)
			cat.Intentions = append([]Intention(nil), intentions...)
			cat.PeerSites = peerSites
			cat.Observed, firstSeen = firstSeen, time.Time{}
			// Services and their instances come sorted, and shared with
			// earlier catalogs (consulbuild.go): sort only what is new.
			cat.sortIntentions()
			c.logWarnings(warns)
			if h := cat.computeHash(); h != lastHash {
				lastHash, cat.hash = h, h
				latest.Send(out, cat)
				c.mu.Lock()
				c.status.Synced = true
				c.status.Services = len(cat.Services)
				c.status.LastChange = time.Now()
				c.mu.Unlock()
			}
		}
		// Start fetches for dirty services, a bounded number at a time,
		// unless an error asked us to wait.
		for name := range dirty {
			if healthOnly[name] && !inflight[name] {
				if checkIdx == nil && lastChecks != nil {
					checkIdx = indexChecks(lastChecks, healthOnly, entries)
				}
				inst, ok := refreshHealth(name, fetched[name], checkIdx)
				delete(healthOnly, name)
				if ok && listed[name] {
					entries[name] = inst
					builds.touch(name)
					delete(dirty, name)
					arm()
					continue
				}
			}
			if retry != nil || len(inflight) >= c.opts.Fetchers {
				break
			}
			if !listed[name] {
				delete(dirty, name)
				continue
			}
			if inflight[name] {
				continue // re-read after the current read returns
			}
			delete(dirty, name)
			inflight[name] = true
			go c.fetch(ctx, name, results)
		}
		if timer == nil && listed != nil && intentions != nil && importsSet && len(dirty) == 0 && len(inflight) == 0 && lastHash == "" {
			arm() // an empty registry is a complete answer too
		}
	}
}

// coalesceDelay is how long to wait before emitting: nothing after a
// quiet spell, else the rest of the window that began at the last one.
func coalesceDelay(last time.Time, window time.Duration, now time.Time) time.Duration {
	if d := window - now.Sub(last); d > 0 {
		return d
	}
	return 0
}

// fetch reads one service's instances and their health.
func (c *Consul) fetch(ctx context.Context, name string, out chan<- fetchResult) {
	entries, _, err := c.opts.Client.Health().Service(name, "", false, (&api.QueryOptions{}).WithContext(ctx))
	r := fetchResult{name: name, err: err}
	if err == nil {
		r.instances = fetchedFrom(entries)
	}
	select {
	case out <- r:
	case <-ctx.Done():
	}
}

// intentionsFrom flattens service-intentions config entries, with their L7
// permissions when a source has them instead of an action.
func intentionsFrom(entries []api.ConfigEntry) []Intention {
	out := []Intention{}
	for _, e := range entries {
		si, ok := e.(*api.ServiceIntentionsConfigEntry)
		if !ok {
			continue
		}
		for _, src := range si.Sources {
			if src == nil || (src.Action == "" && len(src.Permissions) == 0) {
				continue
			}
			in := Intention{Source: src.Name, Destination: si.Name, Allow: src.Action == api.IntentionActionAllow}
			for _, p := range src.Permissions {
				if p == nil {
					continue
				}
				perm := IntentionPermission{Allow: p.Action == api.IntentionActionAllow, Headers: p.JWT != nil}
				if h := p.HTTP; h != nil {
					perm.PathExact, perm.PathPrefix, perm.PathRegex = h.PathExact, h.PathPrefix, h.PathRegex
					perm.Methods = append([]string(nil), h.Methods...)
					perm.Headers = perm.Headers || len(h.Header) > 0
				}
				in.Permissions = append(in.Permissions, perm)
			}
			out = append(out, in)
		}
	}
	return out
}

// checkFingerprints summarises checks per service and node-level checks
// per node, so a change can be traced to the services it affects.
func checkFingerprints(checks []*api.HealthCheck) (services, nodes map[string]string) {
	services, nodes = map[string]string{}, map[string]string{}
	for _, ch := range checks {
		sig := fmt.Sprintf("%s/%s/%s/%d;", ch.Node, ch.CheckID, ch.Status, ch.ModifyIndex)
		if ch.ServiceName == "" {
			nodes[ch.Node] += sig
		} else {
			services[ch.ServiceName] += sig
		}
	}
	// Order within a service must not matter: sort each signature.
	for k, v := range services {
		services[k] = sortedSig(v)
	}
	for k, v := range nodes {
		nodes[k] = sortedSig(v)
	}
	return services, nodes
}

func sortedSig(s string) string {
	parts := strings.Split(strings.TrimSuffix(s, ";"), ";")
	sort.Strings(parts)
	return strings.Join(parts, ";")
}

// logWarnings logs each distinct meta warning once, not on every change.
func (c *Consul) logWarnings(warns []Warning) {
	for _, w := range warns {
		key := w.String()
		if c.warned[key] {
			continue
		}
		c.warned[key] = true
		c.log.Warn("ignoring service meta value", "service", w.Service, "instance", w.Instance,
			"key", w.Key, "value", w.Value, "using", w.Used)
	}
}

// consulService is the registry's own service; it is not part of the mesh.
const consulService = "consul"

// poll runs one blocking query in a loop, reporting each new answer.
func (c *Consul) poll(ctx context.Context, what string, out chan<- watchEvent,
	query func(*api.QueryOptions) (watchEvent, uint64, error)) {
	bo := backoff.Backoff{Min: c.opts.BackoffMin, Max: c.opts.BackoffMax}
	var index uint64
	for ctx.Err() == nil {
		q := (&api.QueryOptions{WaitIndex: index, WaitTime: c.opts.WaitTime}).WithContext(ctx)
		ev, last, err := query(q)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, context.Canceled) {
				return
			}
			c.setErr(what, err)
			c.log.Error("Consul query failed; keeping the last known catalog", "query", what, "err", err)
			sleep(ctx, bo.Next())
			continue
		}
		bo.Reset()
		if last == index && index != 0 {
			continue // the wait timed out with no change
		}
		index = nextIndex(index, last)
		select {
		case out <- ev:
		case <-ctx.Done():
			return
		}
	}
}

func rawFromEntry(e *api.ServiceEntry) RawInstance {
	addr := e.Service.Address
	if addr == "" {
		addr = e.Node.Address
	}
	health, weight := healthOf(e.Checks, e.Service.Weights)
	return RawInstance{
		ServiceName: e.Service.Service, ID: e.Service.ID, Node: e.Node.Node,
		Address: addr, Port: e.Service.Port, Health: health, Weight: weight,
		ServiceMeta: e.Service.Meta, NodeMeta: e.Node.Meta,
	}
}

// nextIndex applies Consul's rules for blocking-query indexes: an index
// that goes backwards (agent restarted, snapshot restored) resets the
// watch, and an index of 0 is never used as a wait index.
func nextIndex(prev, got uint64) uint64 {
	if got < prev || got == 0 {
		return 0
	}
	return got
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
