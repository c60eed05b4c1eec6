package registry

import (
	"context"
	"errors"

	"github.com/hashicorp/consul/api"

	"medmesh/internal/backoff"
)

// DefaultServiceWatches is how many services a Consul source follows one
// by one, with a blocking query each, before it falls back to the one
// watch of every check (ConsulOptions.ServiceWatches).
//
// Why one by one: a check change wakes only the query of the service it
// belongs to, and its answer is that service's instances (a few hundred
// bytes), where the watch of every check makes Consul walk, encode and
// send every check in the datacenter (about 400 KB for 1,000 instances)
// and the control plane decode it, on the path of every health change.
// On a small site that read was most of a change's latency.
//
// Why not always: each blocking query holds an HTTP connection, and
// Consul allows 200 per client address by default
// (limits.http_max_conns_per_client); 100 leaves room for the other
// watches, the reads after a registration change, and the imports of
// peered sites (one blocking query per imported service, peers.go).
const DefaultServiceWatches = 100

// How a Consul source follows health (SourceStatus.HealthWatch).
const (
	healthWatchPerService = "per-service"
	healthWatchAllChecks  = "all-checks"
)

func (c *Consul) setHealthWatch(mode string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.status.HealthWatch != mode && c.status.HealthWatch != "" {
		c.log.Info("following service health another way", "from", c.status.HealthWatch, "to", mode)
	}
	c.status.HealthWatch = mode
}

// serviceWatches runs one blocking health query per service.
type serviceWatches struct {
	c      *Consul
	ctx    context.Context
	out    chan<- fetchResult
	cancel map[string]*watch
}

// watch is one service's running watch; its answers carry it, so that
// an answer still on its way from a stopped watch is told apart.
type watch struct{ cancel context.CancelFunc }

func newServiceWatches(ctx context.Context, c *Consul, out chan<- fetchResult) *serviceWatches {
	return &serviceWatches{c: c, ctx: ctx, out: out, cancel: map[string]*watch{}}
}

// follow makes the watched services exactly the listed ones and returns
// the ones it started (their first answer is still to come).
func (w *serviceWatches) follow(listed map[string]bool) (started []string) {
	for name, wt := range w.cancel {
		if !listed[name] {
			wt.cancel()
			delete(w.cancel, name)
		}
	}
	for name := range listed {
		if _, ok := w.cancel[name]; ok {
			continue
		}
		ctx, cancel := context.WithCancel(w.ctx)
		wt := &watch{cancel: cancel}
		w.cancel[name] = wt
		go w.c.watchService(ctx, name, wt, w.out)
		started = append(started, name)
	}
	return started
}

// stop ends every watch and returns the services that were watched.
func (w *serviceWatches) stop() []string {
	var names []string
	for name, wt := range w.cancel {
		wt.cancel()
		names = append(names, name)
	}
	clear(w.cancel)
	return names
}

func (w *serviceWatches) active() bool { return len(w.cancel) > 0 }

// stale reports an answer from a watch that has been stopped since.
func (w *serviceWatches) stale(r fetchResult) bool {
	return r.watch != nil && w.cancel[r.name] != r.watch
}

// watchService follows one of this site's services with watchHealth,
// reporting every answer and error as a fetchResult carrying wt; what was
// last read stays in the catalog while errors are retried.
func (c *Consul) watchService(ctx context.Context, name string, wt *watch, out chan<- fetchResult) {
	c.watchHealth(ctx, name, "", func(entries []*api.ServiceEntry, err error) bool {
		r := fetchResult{name: name, err: err, watch: wt}
		if err == nil {
			r.instances = fetchedFrom(entries)
		}
		select {
		case out <- r:
			return true
		case <-ctx.Done():
			return false
		}
	})
}

// watchHealth follows a service's health entries (this site's, or with
// peer set what Consul imported from that peer) with blocking queries
// until ctx ends. It calls report with every new answer (the first at
// once) and every error; after an error it backs off and reads afresh.
// report returns false to stop (ctx ended while it waited).
func (c *Consul) watchHealth(ctx context.Context, service, peer string, report func([]*api.ServiceEntry, error) bool) {
	bo := backoff.Backoff{Min: c.opts.BackoffMin, Max: c.opts.BackoffMax}
	var index uint64
	for ctx.Err() == nil {
		q := (&api.QueryOptions{Peer: peer, WaitIndex: index, WaitTime: c.opts.WaitTime}).WithContext(ctx)
		entries, meta, err := c.opts.Client.Health().Service(service, "", false, q)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, context.Canceled) {
				return
			}
			index = 0
			if !report(nil, err) {
				return
			}
			sleep(ctx, bo.Next())
			continue
		}
		bo.Reset()
		if meta.LastIndex == index && index != 0 {
			continue // the wait timed out with no change
		}
		index = nextIndex(index, meta.LastIndex)
		if !report(entries, nil) {
			return
		}
	}
}

// fetchedFrom keeps what the catalog and the health fast path need of a
// service's health entries.
func fetchedFrom(entries []*api.ServiceEntry) []fetchedInstance {
	out := make([]fetchedInstance, 0, len(entries))
	for _, e := range entries {
		out = append(out, fetchedInstance{raw: rawFromEntry(e), weights: e.Service.Weights, checks: checkIDs(e.Checks)})
	}
	return out
}
