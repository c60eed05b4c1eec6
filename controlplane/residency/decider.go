package residency

import (
	"context"
	"sync"

	"github.com/open-policy-agent/opa/v1/ast"
)

// minMemo is the memo size below which nothing is ever evicted.
const minMemo = 1024

// Decider decides flows under one policy at a time, memoizing by input:
// a decision depends only on the input document (the policy cannot call
// nondeterministic builtins), and a site's control plane re-decides the
// same flows on every catalog change while only a few of them differ.
// Decide evaluates only flows not seen since the policy last changed.
//
// The memo is keyed by caller, then by destination: a site has a few
// dozen callers and thousands of destinations, and a call's flows come
// grouped by caller, so each lookup probes one caller's small map (which
// stays in cache) rather than one map of every flow. That is several
// times faster than a flat map at 250,000 flows, where lookups, not
// evaluations, are the cost of a re-decision.
//
// The memo holds what recent calls asked for: once it outgrows twice the
// last call (and minMemo), it is rebuilt with that call's flows only, so
// inputs of services long gone do not accumulate on a long-lived site.
//
// A Decider is safe for concurrent use; calls are serialized.
type Decider struct {
	mu      sync.Mutex
	policy  *Policy
	memo    map[Source]map[Destination]Decision
	entries int
	stats   Stats
}

// Stats are a Decider's counters, for metrics and tests.
type Stats struct {
	// Policy and Digest name the policy in force.
	Policy string
	Digest string
	// Evaluations counts policy evaluations (memo misses) since the
	// Decider was made; Hits the flows answered from the memo.
	Evaluations uint64
	Hits        uint64
	// Failures counts evaluations that failed and so denied their flow.
	Failures    uint64
	MemoEntries int
}

// NewDecider returns a Decider with p in force; nil means Default().
func NewDecider(p *Policy) *Decider {
	if p == nil {
		p = Default()
	}
	return &Decider{policy: p, memo: map[Source]map[Destination]Decision{}}
}

// SetPolicy puts p in force (nil: Default()). The memo is dropped unless
// p has the same source as the policy in force (a file rewritten with
// identical content changes nothing). It reports whether the policy
// changed.
func (d *Decider) SetPolicy(p *Policy) bool {
	if p == nil {
		p = Default()
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if p.digest == d.policy.digest {
		return false
	}
	d.policy = p
	d.memo, d.entries = map[Source]map[Destination]Decision{}, 0
	return true
}

// Policy returns the policy in force.
func (d *Decider) Policy() *Policy {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.policy
}

// Decide returns one decision per flow, in order. Flows seen since the
// policy last changed are answered from the memo; the others are
// evaluated once each. It never panics; a failing evaluation denies its
// flow (fail closed). The decisions' Reasons are shared with the memo:
// read them, do not modify them.
func (d *Decider) Decide(flows []Flow) []Decision {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]Decision, len(flows))
	ctx := context.Background()
	var (
		src     Source
		srcTerm *ast.Term // built on the caller's first miss
		dests   map[Destination]Decision
	)
	for i, f := range flows {
		if dests == nil || f.Source != src {
			src, srcTerm, dests = f.Source, nil, d.memo[f.Source]
			if dests == nil {
				dests = map[Destination]Decision{}
				d.memo[src] = dests
			}
		}
		if dec, ok := dests[f.Destination]; ok {
			out[i] = dec
			d.stats.Hits++
			continue
		}
		if srcTerm == nil {
			srcTerm = src.term()
		}
		dec, err := d.policy.decide(ctx, f.astInput(srcTerm))
		d.stats.Evaluations++
		if err != nil {
			d.stats.Failures++
		}
		dests[f.Destination] = dec
		d.entries++
		out[i] = dec
	}
	if d.entries > max(2*len(flows), minMemo) {
		d.memo, d.entries = map[Source]map[Destination]Decision{}, 0
		for i, f := range flows {
			dests := d.memo[f.Source]
			if dests == nil {
				dests = map[Destination]Decision{}
				d.memo[f.Source] = dests
			}
			if _, ok := dests[f.Destination]; !ok {
				dests[f.Destination] = out[i]
				d.entries++
			}
		}
	}
	return out
}

// Stats returns the counters.
func (d *Decider) Stats() Stats {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := d.stats
	s.Policy, s.Digest, s.MemoEntries = d.policy.name, d.policy.digest, d.entries
	return s
}
