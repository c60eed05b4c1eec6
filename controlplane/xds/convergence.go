package xds

import "time"

// Convergence: how long a change takes from reaching the control loop to
// being held by a proxy, measured for every proxy push whether or not the
// round is traced (pushtrace.go does the same bookkeeping for spans, but
// only for traced rounds). A push has converged when the proxy has ACKed
// every changed type it subscribes to; a NACK of one of them ends it
// unconverged (the standing-NACK gauges report that), and a later push to
// the same proxy replaces it, so at most one wait per proxy is held and
// nothing needs a timer.

// convergeWait is one proxy's latest push waiting to be held in full.
type convergeWait struct {
	start   time.Time
	pending map[string]string // type URL -> version
}

// expectConvergence registers a push to proxy id of the changed types
// (type URL -> version) of a change that reached the loop at start.
// Called before the snapshot is set, so an immediate ACK finds it.
func (t *Tracker) expectConvergence(id string, start time.Time, changed map[string]string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	p, ok := t.proxies[id]
	if !ok {
		return
	}
	var pending map[string]string
	for typ, v := range changed {
		if p.subscribed[typ] {
			if pending == nil {
				pending = make(map[string]string, len(changed))
			}
			pending[typ] = v
		}
	}
	if pending == nil {
		p.converge = nil
		return
	}
	if start.IsZero() {
		start = t.now()
	}
	p.converge = &convergeWait{start: start, pending: pending}
}

// convergedLocked records an ACK (nack false) or NACK of version of
// typeURL by p; callers hold t.mu.
func (t *Tracker) convergedLocked(p *proxyInfo, typeURL, version string, nack bool, now time.Time) {
	w := p.converge
	if w == nil || w.pending[typeURL] != version {
		return
	}
	if nack {
		p.converge = nil
		return
	}
	delete(w.pending, typeURL)
	if len(w.pending) == 0 {
		p.converge = nil
		t.metrics.convergence.Observe(now.Sub(w.start).Seconds())
	}
}
