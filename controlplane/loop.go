package controlplane

import (
	"context"
	"fmt"
	"runtime/debug"
	"slices"
	"time"

	"medmesh/controlplane/ir"
	"medmesh/controlplane/policy"
	"medmesh/controlplane/residency"
	"medmesh/internal/backoff"
	"medmesh/registry"
)

// loopState is owned by the loop goroutine alone. Per-proxy state lives
// with its owners: what each proxy was sent in xds, which identity it
// holds in identity.
type loopState struct {
	catalog     *registry.Catalog // last good catalog
	catalogHash string
	fromDisk    bool

	// A catalog that suddenly lists no services waits out the grace
	// period before it is believed.
	pendingEmpty *registry.Catalog
	emptySince   time.Time

	// policySet is the policy source's latest set (nil: none yet) and
	// policyStatus the last resolution's statuses.
	policySet    *policy.Set
	policyStatus []policy.ObjectStatus

	// mesh is the IR of the current inputs; nil when an input changed and
	// the next round must build it again. bundle is the trust bundle (PEM)
	// it was built with.
	mesh   *ir.Mesh
	bundle string

	// triggers say why the next round runs (its trace's root span); a
	// round clears them.
	triggers []string
	// since is when the first change the next round serves arrived:
	// proxies' convergence is measured from it. A round that publishes
	// clears it; one that fails keeps it, so the retry counts the wait.
	since time.Time

	// observed is when the registry saw the oldest catalog change the
	// next round carries, and received when the loop got it (the change
	// stage metric); zero when the round carries none. Not the same as
	// since: that counts from any trigger (a policy, a proxy) and
	// survives a failed round, while these time catalog changes only,
	// and each round's stages once, whether it publishes or not.
	observed, received time.Time
	// lastRound is when the last round ended: coalescing waits only for
	// the rest of the window after it.
	lastRound time.Time
}

// trigger notes why the next round runs.
func (st *loopState) trigger(why string) {
	if st.since.IsZero() {
		st.since = time.Now()
	}
	if !slices.Contains(st.triggers, why) {
		st.triggers = append(st.triggers, why)
	}
}

func (cp *ControlPlane) loop(ctx context.Context, catalogs chan *registry.Catalog, sets chan *policy.Set,
	policies chan *residency.Policy) error {
	st := &loopState{}
	if cat, err := cp.loadCatalog(); err != nil {
		cp.log.Warn("no usable saved catalog; waiting for the registry", "err", err)
	} else if cat != nil {
		cp.log.Warn("serving the last known good catalog from the state dir until the registry answers",
			"services", len(cat.Services))
		st.catalog, st.catalogHash, st.fromDisk = cat, cat.Hash(), true
	}
	dirty := st.catalog != nil
	if dirty {
		st.trigger("saved_catalog")
	}
	var timer, retry <-chan time.Time
	// A failed publish is retried with backoff even if nothing changes: a
	// proxy must not sit on a stale config until the next registry event.
	retryBackoff := backoff.Backoff{Min: 500 * time.Millisecond, Max: 30 * time.Second}
	graceTick := time.NewTicker(time.Second)
	defer graceTick.Stop()
	for {
		if dirty && timer == nil {
			// A change after a quiet spell goes out at once; under load,
			// rounds are at least Coalesce apart, gathering what came.
			timer = time.After(max(cp.opts.Coalesce-time.Since(st.lastRound), 0))
		}
		select {
		case <-ctx.Done():
			return nil
		case cat := <-catalogs:
			if cp.acceptCatalog(st, cat) {
				dirty = true
				st.trigger("catalog")
				if st.received.IsZero() {
					st.observed, st.received = cat.Observed, time.Now()
				}
			}
		case set := <-sets:
			st.policySet, st.mesh = set, nil
			dirty = true
			st.trigger("policy")
		case p := <-policies:
			if cp.residency.SetPolicy(p) {
				cp.log.Info("residency policy in force", "policy", p.Name(), "digest", p.Digest())
				st.mesh, dirty = nil, true
				st.trigger("residency_policy")
			}
		case <-graceTick.C:
			if cp.ids.RenewalsDue(time.Now()) {
				dirty = true
				st.trigger("svid_renewal")
			}
			if cp.bundleChanged(st) {
				dirty = true
				st.trigger("trust_bundle")
			}
			if st.pendingEmpty != nil && time.Since(st.emptySince) >= cp.opts.EmptyCatalogGrace {
				cp.log.Warn("registry has listed no services for the whole grace period; removing all services",
					"grace", cp.opts.EmptyCatalogGrace.String())
				cat := st.pendingEmpty
				st.pendingEmpty = nil
				st.catalog, st.catalogHash, st.mesh, st.fromDisk = cat, cat.Hash(), nil, false
				dirty = true
				st.trigger("catalog_empty")
			}
		case <-cp.xds.Tracker().Changed():
			dirty = true
			st.trigger("proxies")
		case <-cp.wake:
			dirty = true
			st.trigger("identity_or_operator")
		case <-retry:
			retry, dirty = nil, true
			st.trigger("retry")
		case <-timer:
			timer, dirty = nil, false
			ok := cp.reconcileSafely(ctx, st)
			st.lastRound = time.Now()
			if ok {
				retryBackoff.Reset()
				retry = nil
			} else if retry == nil {
				retry = time.After(retryBackoff.Next())
			}
		}
	}
}

// acceptCatalog decides whether a new catalog replaces the current one.
func (cp *ControlPlane) acceptCatalog(st *loopState, cat *registry.Catalog) bool {
	h := cat.Hash()
	if len(cat.Services) == 0 && st.catalog != nil && len(st.catalog.Services) > 0 {
		if st.pendingEmpty == nil {
			st.emptySince = time.Now()
			cp.log.Warn("registry suddenly lists no services; keeping the current mesh for the grace period",
				"source", cp.opts.Source.Name(), "grace", cp.opts.EmptyCatalogGrace.String())
		}
		st.pendingEmpty = cat
		return false
	}
	st.pendingEmpty = nil
	if h == st.catalogHash && !st.fromDisk {
		return false
	}
	st.catalog, st.catalogHash, st.fromDisk, st.mesh = cat, h, false, nil
	cp.metrics.catalogChanges.Inc()
	return true
}

// bundleChanged reports whether the CA's trust bundle changed (a root
// rotation adds a root); the next round then builds the mesh with it.
func (cp *ControlPlane) bundleChanged(st *loopState) bool {
	if cp.opts.Identities == nil {
		return false
	}
	b, err := cp.ids.BundlePEM()
	if err != nil {
		cp.log.Error("cannot encode the trust bundle", "err", err)
		return false
	}
	if b == st.bundle {
		return false
	}
	st.bundle, st.mesh = b, nil
	return true
}

// reconcileSafely recovers a panic in a round: it is counted and logged,
// and the last good configuration stays in place.
func (cp *ControlPlane) reconcileSafely(ctx context.Context, st *loopState) (ok bool) {
	defer func() {
		if r := recover(); r != nil {
			ok = false
			cp.metrics.panics.Inc()
			cp.log.Error("reconcile panicked; keeping the last good configuration", "panic", fmt.Sprint(r),
				"stack", string(debug.Stack()))
			cp.setError(fmt.Sprintf("internal error: %v", r))
		}
	}()
	start := time.Now()
	err := cp.reconcile(ctx, st)
	cp.metrics.reconcileSeconds.Observe(time.Since(start).Seconds())
	if err != nil {
		cp.log.Error("configuration not published; proxies keep their last good configuration", "err", err)
		cp.setError(err.Error())
		return false
	}
	return true
}

func (cp *ControlPlane) setError(msg string) {
	cp.mu.Lock()
	cp.state.LastError = msg
	cp.mu.Unlock()
}
