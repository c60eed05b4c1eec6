package xds

import (
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
)

// Push tracing of endpoint changes (see pushtrace.go). Endpoints are
// served from one cache shared by every proxy, so a traced round does not
// know up front who will be sent a changed ClusterLoadAssignment; the
// cache does, when it builds each response. A traced round hands the
// cache the names it changed (traceEndpoints, before the update); each
// response the cache builds that carries one of them to a proxy that was
// subscribed to it registers that proxy's EDS push, waiting for the
// response's own version (noteSent). That covers the proxies whose watch
// was parked (answered in the update, during Publish), those whose ACK of
// an earlier response was still on its way (answered when their next
// request arrives), and responses go-control-plane dropped and the cache
// built again: each later response updates the version waited for.
//
// A proxy counts as subscribed when its watch was woken by the change, or,
// when answering a request, when it already held the assignment: a proxy
// that asks for it for the first time (a new client, a new cluster) is
// not being pushed a change but fetching its initial state.
//
// Where this hooks into the cache (endpoints.go): the field
// endpointCache.traced, and one call of noteSent at the end of each of
// sotwResponse and deltaResponse, after the response (and its version)
// is built and before it is sent. Nothing else of the cache changes.

// edsChange is one traced round's endpoint change as the endpoint cache
// delivers it. Immutable but for nodes.
type edsChange struct {
	round   *pushes
	tracker *Tracker
	names   map[string]bool // the assignments the round changed
	at      time.Time       // when the round handed them to the cache
	until   time.Time       // after this, nothing more is registered
	// nodes are the proxies registered for this change (guarded by
	// tracker.mu): each gets one push, later responses update it.
	nodes map[string]bool
}

// traceEndpoints hands the cache the names a traced round is about to
// update; publishEndpoints calls it before the update. An untraced round
// leaves a traced change in place until it expires: its pushes may still
// be answered by responses carrying both changes.
func (s *Server) traceEndpoints(toUpdate []Hashed) {
	p := s.pub.pushes
	if p == nil || len(toUpdate) == 0 {
		return
	}
	now := time.Now()
	ch := &edsChange{round: p, tracker: s.tracker, names: make(map[string]bool, len(toUpdate)),
		at: now, until: now.Add(pushAnswerTimeout), nodes: map[string]bool{}}
	for _, h := range toUpdate {
		ch.names[h.Name] = true
	}
	s.endpoints.mu.Lock()
	s.endpoints.traced = ch
	s.endpoints.mu.Unlock()
}

// noteSent is called by the cache, holding c.mu, for every response it
// builds: node is the proxy, version the response's, send the assignments
// it carries; notification says the response answers the change itself
// (a parked watch woken by update) rather than a request.
func (c *endpointCache) noteSent(node, version string, send []string, notification bool, sub cache.Subscription) {
	ch := c.traced
	if ch == nil || len(send) == 0 {
		return
	}
	if time.Now().After(ch.until) {
		c.traced = nil
		return
	}
	var held map[string]string
	if !notification {
		held = sub.ReturnedResources() // before this response: changes() updated a copy
	}
	for _, name := range send {
		if !ch.names[name] {
			continue
		}
		if _, ok := held[name]; notification || ok {
			ch.tracker.edsSent(ch, node, version)
			return
		}
	}
}

// edsSent registers, or updates, proxy id's push of the traced endpoint
// change ch, sent in a response of version.
func (t *Tracker) edsSent(ch *edsChange, id, version string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	pi, ok := t.proxies[id]
	if !ok {
		return
	}
	if ch.nodes[id] {
		// A later response carries the change again (the earlier one was
		// dropped unanswered, or a newer change joined it): wait for this
		// one's version instead.
		if a := t.awaits[id]; a != nil && a.round == ch.round {
			if _, waiting := a.pending[resource.EndpointType]; waiting {
				a.pending[resource.EndpointType] = version
			}
		}
		return
	}
	ch.nodes[id] = true
	t.pushLocked(ch.round, pi, map[string]string{resource.EndpointType: version}, ch.at)
}
