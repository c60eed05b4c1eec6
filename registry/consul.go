package registry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
)

// ConsulOptions configures a Consul source.
type ConsulOptions struct {
	// Client talks to the Consul agent's HTTP API.
	Client *api.Client
	// Coalesce is how long a burst of changes is gathered into one catalog;
	// Consul's own proxycfg waits 200ms for the same reason.
	Coalesce time.Duration
	// WaitTime bounds each blocking query (Consul caps it at 10m).
	WaitTime time.Duration
	// BackoffMin and BackoffMax bound retries after errors.
	BackoffMin, BackoffMax time.Duration
	Logger                 *slog.Logger
}

// SourceStatus is what a source reports to /readyz and the status page.
type SourceStatus struct {
	// Synced is true once a complete catalog has been emitted.
	Synced      bool      `json:"synced"`
	Services    int       `json:"services"`
	LastError   string    `json:"lastError,omitempty"`
	LastErrorAt time.Time `json:"lastErrorAt,omitzero"`
	LastChange  time.Time `json:"lastChange,omitzero"`
}

// Consul watches the Consul catalog with blocking queries: one long poll on
// the service list and one per service on its health. Errors back off with
// jitter and never clear what was last seen: a registry outage keeps the
// mesh as it was.
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
		opts.Coalesce = 200 * time.Millisecond
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

type healthResult struct {
	name      string
	instances []RawInstance
}

// Run watches Consul until ctx ends, sending each new complete catalog on
// out. The first catalog is sent only once the service list and the health
// of every listed service have been read, so a proxy never receives a
// half-read registry. out is written "latest wins": a slow reader gets the
// newest catalog, never a backlog.
func (c *Consul) Run(ctx context.Context, out chan *Catalog) error {
	names := make(chan map[string]bool, 1)
	results := make(chan healthResult, 64)
	go c.watchServiceList(ctx, names)

	watchers := map[string]context.CancelFunc{}
	entries := map[string][]RawInstance{}
	var listed map[string]bool
	var timer <-chan time.Time
	lastHash := ""
	defer func() {
		for _, cancel := range watchers {
			cancel()
		}
	}()

	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case l := <-names:
			listed = l
			for name := range l {
				if _, ok := watchers[name]; !ok {
					wctx, cancel := context.WithCancel(ctx)
					watchers[name] = cancel
					go c.watchService(wctx, name, results)
				}
			}
			for name, cancel := range watchers {
				if !l[name] {
					cancel()
					delete(watchers, name)
					delete(entries, name)
				}
			}
		case r := <-results:
			if _, ok := watchers[r.name]; !ok {
				continue // a late answer for a service that was removed
			}
			entries[r.name] = r.instances
		case <-timer:
			timer = nil
			if listed == nil || len(entries) < len(listed) {
				continue // not every service has been read yet
			}
			var raw []RawInstance
			for _, inst := range entries {
				raw = append(raw, inst...)
			}
			cat, warns := BuildCatalog(raw)
			c.logWarnings(warns)
			if h := cat.Hash(); h != lastHash {
				lastHash = h
				SendLatest(out, cat)
				c.mu.Lock()
				c.status.Synced = true
				c.status.Services = len(cat.Services)
				c.status.LastChange = time.Now()
				c.mu.Unlock()
			}
			continue
		}
		if timer == nil {
			timer = time.After(c.opts.Coalesce)
		}
	}
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

func (c *Consul) watchServiceList(ctx context.Context, out chan map[string]bool) {
	bo := Backoff{Min: c.opts.BackoffMin, Max: c.opts.BackoffMax}
	var index uint64
	for ctx.Err() == nil {
		q := (&api.QueryOptions{WaitIndex: index, WaitTime: c.opts.WaitTime}).WithContext(ctx)
		svcs, meta, err := c.opts.Client.Catalog().Services(q)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			c.setErr("listing services", err)
			c.log.Error("cannot list Consul services; keeping the last known catalog", "err", err)
			sleep(ctx, bo.Next())
			continue
		}
		bo.Reset()
		index = nextIndex(index, meta.LastIndex)
		l := make(map[string]bool, len(svcs))
		for name := range svcs {
			if name != consulService {
				l[name] = true
			}
		}
		SendLatest(out, l)
	}
}

func (c *Consul) watchService(ctx context.Context, name string, out chan<- healthResult) {
	bo := Backoff{Min: c.opts.BackoffMin, Max: c.opts.BackoffMax}
	var index uint64
	for ctx.Err() == nil {
		q := (&api.QueryOptions{WaitIndex: index, WaitTime: c.opts.WaitTime}).WithContext(ctx)
		entries, meta, err := c.opts.Client.Health().Service(name, "", false, q)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, context.Canceled) {
				return
			}
			c.setErr("reading health of "+name, err)
			c.log.Warn("cannot read service health; keeping its last known instances", "service", name, "err", err)
			sleep(ctx, bo.Next())
			continue
		}
		bo.Reset()
		if meta.LastIndex == index {
			continue // the wait timed out with no change
		}
		index = nextIndex(index, meta.LastIndex)
		raw := make([]RawInstance, 0, len(entries))
		for _, e := range entries {
			raw = append(raw, rawFromEntry(e))
		}
		select {
		case out <- healthResult{name: name, instances: raw}:
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
	health := Health(e.Checks.AggregatedStatus())
	switch health {
	case HealthPassing, HealthWarning:
	default: // critical and maintenance
		health = HealthCritical
	}
	weight := e.Service.Weights.Passing
	if health == HealthWarning {
		weight = e.Service.Weights.Warning
	}
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

// SendLatest puts v on a buffered channel of capacity 1, replacing any
// value the reader has not taken yet ("deliver latest").
func SendLatest[T any](ch chan T, v T) {
	for {
		select {
		case ch <- v:
			return
		default:
		}
		select {
		case <-ch:
		default:
		}
	}
}
