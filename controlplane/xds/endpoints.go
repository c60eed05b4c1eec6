package xds

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// endpointCache serves ClusterLoadAssignments to every proxy, SotW and
// delta, through go-control-plane's server, implementing its cache.Cache
// interface the way its LinearCache does, with one difference that
// matters at hospital-group scale: the cost of a change is proportional to
// the proxies that subscribe to the changed assignment, not to proxies ×
// assignments. LinearCache re-indexes every name of a subscription each
// time a proxy acknowledges a response and re-examines every subscribed
// name of every watch on each change; with 1,000 proxies each holding
// 1,000 assignments that was ten million map operations and 1.5 CPU
// seconds per endpoint change.
//
// Watches are parked in a set; a change looks at each parked watch once,
// and only at the names that changed. Each assignment is marshalled once
// and the bytes are shared by every response. Versions, per resource and
// per response, are derived from content (endpointversion.go), so a proxy
// that reconnects to a restarted control plane with what it has is sent
// nothing new.
type endpointCache struct {
	mu   sync.Mutex
	res  map[string]*endpointEntry
	fold uint64 // of every served assignment: the delta system version
	// ready is set by the first publication. Until then requests are
	// parked: a delta proxy reconnecting with what it holds must not be
	// told its assignments were removed because a restarted control plane
	// has not read the registry yet.
	ready bool
	// replaced holds, during an update, the entries it replaced or
	// deleted, so that a SotW version can be adjusted without re-hashing
	// what the proxy held.
	replaced map[string]*endpointEntry
	sotw     map[*sotwEndpointWatch]struct{}
	delta    map[*deltaEndpointWatch]struct{}
	// traced is the traced endpoint change being delivered (edstrace.go);
	// nil when tracing is off.
	traced *edsChange
}

type endpointEntry struct {
	res  types.Resource
	hash string
	dig  uint64 // digest(name, hash)
	any  *anypb.Any
}

type sotwEndpointWatch struct {
	req        *cache.Request
	sub        cache.Subscription
	ch         chan cache.Response
	replyEmpty bool
}

type deltaEndpointWatch struct {
	req        *cache.DeltaRequest
	sub        cache.Subscription
	ch         chan cache.DeltaResponse
	replyEmpty bool
}

var _ cache.Cache = (*endpointCache)(nil)

func newEndpointCache() *endpointCache {
	return &endpointCache{
		res:  map[string]*endpointEntry{},
		sotw: map[*sotwEndpointWatch]struct{}{}, delta: map[*deltaEndpointWatch]struct{}{},
	}
}

// update adds or replaces resources (with their content hashes) and
// deletes others, then answers the watches the change concerns. The first
// update, even an empty one, opens the cache: requests parked until then
// are answered.
func (c *endpointCache) update(toUpdate []Hashed, toDelete []string) error {
	entries := make([]*endpointEntry, 0, len(toUpdate))
	for _, h := range toUpdate {
		a, err := anypb.New(h.Resource.(proto.Message))
		if err != nil {
			return fmt.Errorf("endpoints %q: %w", h.Name, err)
		}
		entries = append(entries, &endpointEntry{res: h.Resource, hash: h.Hash, dig: digest(h.Name, h.Hash), any: a})
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	modified := make([]string, 0, len(toUpdate)+len(toDelete))
	c.replaced = map[string]*endpointEntry{}
	defer func() { c.replaced = nil }()
	for i, e := range entries {
		name := toUpdate[i].Name
		if old, ok := c.res[name]; ok {
			c.fold ^= old.dig
			c.replaced[name] = old
		}
		c.fold ^= e.dig
		c.res[name] = e
		modified = append(modified, name)
	}
	for _, name := range toDelete {
		if old, ok := c.res[name]; ok {
			c.fold ^= old.dig
			c.replaced[name] = old
			delete(c.res, name)
			modified = append(modified, name)
		}
	}
	if !c.ready {
		c.ready = true
		// Parked before there was anything to compare with: answer each
		// as the request it is.
		modified = nil
	} else if len(modified) == 0 {
		return nil
	}
	for w := range c.sotw {
		if resp := c.sotwResponse(w.req, w.sub, modified, w.replyEmpty); resp != nil {
			w.ch <- resp
			delete(c.sotw, w)
		}
	}
	for w := range c.delta {
		if resp := c.deltaResponse(w.req, w.sub, modified, w.replyEmpty); resp != nil {
			w.ch <- resp
			delete(c.delta, w)
		}
	}
	return nil
}

// changes compares what a subscription was sent with the cache, over the
// given names (nil: everything subscribed). It returns the names to send,
// the names the client holds that no longer exist, and the versions the
// client will hold after this response (nil when nothing changes).
//
// f serves the SotW version (endpointversion.go), computed in the same
// pass over the names: over everything subscribed (names nil) it is the
// fold of what the client holds afterwards; over changed names it is the
// XOR that turns the fold the client held into that.
func (c *endpointCache) changes(sub cache.Subscription, names []string) (send, gone []string, next map[string]string, f uint64) {
	returned := sub.ReturnedResources()
	consider := func(name string, checkSubscribed bool) {
		if checkSubscribed && !sub.IsWildcard() {
			if _, ok := sub.SubscribedResources()[name]; !ok {
				return
			}
		}
		e, exists := c.res[name]
		v, known := returned[name]
		switch {
		case exists && (!known || v != e.hash):
			send = append(send, name)
			if names != nil && known {
				f ^= c.digOf(name, v)
			}
			f ^= e.dig
		case !exists && known:
			gone = append(gone, name)
			if names != nil {
				f ^= c.digOf(name, v)
			}
		case exists && names == nil:
			f ^= e.dig // held and unchanged
		}
	}
	switch {
	case names != nil:
		for _, n := range names {
			consider(n, true)
		}
	case sub.IsWildcard():
		for n := range c.res {
			consider(n, false)
		}
		for n := range returned {
			if _, ok := c.res[n]; !ok && n != sotwFoldKey {
				gone = append(gone, n)
			}
		}
	default:
		for n := range sub.SubscribedResources() {
			consider(n, false)
		}
	}
	if len(send) == 0 && len(gone) == 0 {
		return nil, nil, nil, f
	}
	// On a change notification the subscription's own map is updated in
	// place rather than cloned: cloning a thousand entries for each of a
	// thousand proxies was most of the cost of a change. go-control-plane
	// touches a subscription's returned map only from the stream's
	// goroutine and only after cancelling the watch, which takes c.mu.
	//
	// An answer to a request gets a copy: go-control-plane's ADS server
	// drops a response still queued when the next request of its type
	// arrives, and a client discovering several clusters at once (a
	// route's subsets) sends EDS requests back to back. Marked in place,
	// the dropped response's assignments would count as delivered and
	// never be sent (grpc-go then reports "no targets to pick from").
	// Requests are rare next to notifications, so the copy is cheap.
	next = returned
	if names == nil {
		next = maps.Clone(returned)
	}
	if next == nil {
		next = map[string]string{}
	}
	for _, n := range send {
		next[n] = c.res[n].hash
	}
	for _, n := range gone {
		delete(next, n)
	}
	if names == nil && !sub.IsWildcard() {
		// After a new request, forget names no longer subscribed, so a
		// later re-subscription is answered. (A change notification
		// cannot alter the subscription, so it skips this.)
		for n := range next {
			if _, ok := sub.SubscribedResources()[n]; !ok {
				delete(next, n)
			}
		}
	}
	return send, gone, next, f
}

// digOf is the digest of an assignment at a version a client holds: the
// current one, the one an update is replacing, or (rarely) older.
func (c *endpointCache) digOf(name, hash string) uint64 {
	if e := c.res[name]; e != nil && e.hash == hash {
		return e.dig
	}
	if e := c.replaced[name]; e != nil && e.hash == hash {
		return e.dig
	}
	return digest(name, hash)
}

// heldFold is the fold of a SotW subscription's returned versions: the
// one recorded with them, else computed.
func (c *endpointCache) heldFold(returned map[string]string) uint64 {
	if s, ok := returned[sotwFoldKey]; ok {
		if f, ok := parseFold(s); ok {
			return f
		}
	}
	var f uint64
	for n, v := range returned {
		if n != sotwFoldKey {
			f ^= c.digOf(n, v)
		}
	}
	return f
}

func (c *endpointCache) sotwResponse(req *cache.Request, sub cache.Subscription, names []string, replyEmpty bool) cache.Response {
	returned := sub.ReturnedResources()
	var held uint64
	_, recorded := returned[sotwFoldKey]
	if names != nil && recorded {
		held = c.heldFold(returned) // read before changes() updates the map in place
	}
	send, gone, next, f := c.changes(sub, names)
	fold := f
	switch {
	case names != nil && next == nil:
		return nil // not concerned
	case names != nil && recorded:
		fold = held ^ f
		next[sotwFoldKey] = foldString(fold)
	case names != nil:
		fold = c.heldFold(next)
		next[sotwFoldKey] = foldString(fold)
	case next == nil:
		// Nothing to send to a request: record the version with what the
		// proxy holds (a pure function of it, so this marks nothing as
		// delivered), for the next change to adjust.
		if returned != nil && len(gone) == 0 {
			returned[sotwFoldKey] = foldString(fold)
		}
	default:
		next[sotwFoldKey] = foldString(fold)
	}
	version := foldString(fold)
	if names == nil && len(send) > 0 && req.GetVersionInfo() == version {
		// A proxy that reconnects (to this or a restarted control plane)
		// naming the version of exactly what it subscribes to holds all
		// of it: answer with the version alone, so the stream knows.
		send = nil
		replyEmpty = true
	}
	if len(send) == 0 && !replyEmpty {
		// SotW cannot announce a removed assignment; the cluster that
		// named it goes away in CDS instead.
		return nil
	}
	if next == nil {
		next = maps.Clone(returned)
		if next == nil {
			next = map[string]string{}
		}
		next[sotwFoldKey] = version
	}
	out := &discoveryv3.DiscoveryResponse{VersionInfo: version, TypeUrl: resource.EndpointType}
	for _, n := range send {
		out.Resources = append(out.Resources, c.res[n].any)
	}
	c.noteSent(req.GetNode().GetId(), out.GetVersionInfo(), send, names != nil, sub) // push tracing (edstrace.go)
	return &cache.PassthroughResponse{Request: req, DiscoveryResponse: out, ReturnedResources: next}
}

func (c *endpointCache) deltaResponse(req *cache.DeltaRequest, sub cache.Subscription, names []string, replyEmpty bool) cache.DeltaResponse {
	send, gone, next, _ := c.changes(sub, names)
	if len(send) == 0 && len(gone) == 0 && !replyEmpty {
		return nil
	}
	if next == nil {
		next = sub.ReturnedResources()
	}
	out := &discoveryv3.DeltaDiscoveryResponse{SystemVersionInfo: foldString(c.fold), TypeUrl: resource.EndpointType, RemovedResources: gone}
	for _, n := range send {
		e := c.res[n]
		out.Resources = append(out.Resources, &discoveryv3.Resource{Name: n, Version: e.hash, Resource: e.any})
	}
	c.noteSent(req.GetNode().GetId(), out.GetSystemVersionInfo(), send, names != nil, sub) // push tracing (edstrace.go)
	return &cache.DeltaPassthroughResponse{DeltaRequest: req, DeltaDiscoveryResponse: out, NextVersionMap: next}
}

// CreateWatch implements cache.ConfigWatcher for SotW streams.
func (c *endpointCache) CreateWatch(req *cache.Request, sub cache.Subscription, ch chan cache.Response) (func(), error) {
	if req.GetTypeUrl() != resource.EndpointType {
		return nil, fmt.Errorf("endpoint cache cannot serve %s", req.GetTypeUrl())
	}
	// A client's first request gets an answer even if there is nothing
	// to send, so it can finish initialising.
	replyEmpty := req.GetVersionInfo() == ""
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ready {
		if resp := c.sotwResponse(req, sub, nil, replyEmpty); resp != nil {
			ch <- resp
			return func() {}, nil
		}
	}
	w := &sotwEndpointWatch{req: req, sub: sub, ch: ch, replyEmpty: replyEmpty}
	c.sotw[w] = struct{}{}
	return func() {
		c.mu.Lock()
		delete(c.sotw, w)
		c.mu.Unlock()
	}, nil
}

// CreateDeltaWatch implements cache.ConfigWatcher for delta streams. A
// reconnecting proxy's initial_resource_versions are the subscription's
// returned versions: assignments it holds at their current content hash
// are not sent again.
func (c *endpointCache) CreateDeltaWatch(req *cache.DeltaRequest, sub cache.Subscription, ch chan cache.DeltaResponse) (func(), error) {
	if req.GetTypeUrl() != resource.EndpointType {
		return nil, fmt.Errorf("endpoint cache cannot serve %s", req.GetTypeUrl())
	}
	replyEmpty := sub.IsWildcard() && req.GetResponseNonce() == ""
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ready {
		if resp := c.deltaResponse(req, sub, nil, replyEmpty); resp != nil {
			ch <- resp
			return func() {}, nil
		}
	}
	w := &deltaEndpointWatch{req: req, sub: sub, ch: ch, replyEmpty: replyEmpty}
	c.delta[w] = struct{}{}
	return func() {
		c.mu.Lock()
		delete(c.delta, w)
		c.mu.Unlock()
	}, nil
}

// Fetch implements cache.ConfigFetcher; REST is not served.
func (c *endpointCache) Fetch(context.Context, *cache.Request) (cache.Response, error) {
	return nil, errors.New("fetch is not supported")
}

// resources returns the assignments currently served.
func (c *endpointCache) resources() map[string]types.Resource {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]types.Resource, len(c.res))
	for n, e := range c.res {
		out[n] = e.res
	}
	return out
}

// size is the number of assignments served.
func (c *endpointCache) size() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.res)
}
