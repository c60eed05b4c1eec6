package xds

import (
	"context"
	"sort"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// Push tracing: each round of the control loop is one trace (the loop
// starts it; see controlplane/round.go), and a proxy whose snapshot
// changed gets a span "xds.push" that starts when the snapshot is set and
// ends when the proxy has ACKed every changed type it subscribes to, or
// NACKed one of them. The tracker sees the ACKs, so it ends the spans.
//
// A push span whose proxy never answers (it left, or a later round pushed
// again first) ends as such, and so does one left waiting for
// pushAnswerTimeout (a type changed that the proxy does not ask for in a
// way that makes the cache send it): spans are never left open.
//
// Endpoint (EDS) updates, a health change above all, are traced the same
// way (edstrace.go): every proxy the shared endpoint cache sends a changed
// ClusterLoadAssignment to, because it held or was subscribed to it, gets
// a push of type EDS ending at its ACK or NACK of that response's version,
// SotW and delta alike. A proxy whose snapshot and endpoints one round
// changes gets one push waiting for both, if its EDS answer has not
// already come back when the snapshot is set.
//
// Cost: with tracing off (the round's span does not record), Publish does
// none of this: no await, no map entry, no timer per proxy, and the
// endpoint cache checks one nil pointer per response.

// PushSpanLimit is how many proxies a round traces with a span each;
// beyond it, the round's pushes are events on one "xds.push.summary"
// span (one event per ACK or NACK, with the proxy ID), so a change that
// reaches thousands of sidecars is one span, not thousands.
const PushSpanLimit = 100

// pushAnswerTimeout ends a push span still waiting for an answer.
const pushAnswerTimeout = 30 * time.Second

// Span attribute keys of push spans and events. They name proxies, types
// and versions; never request content.
const (
	AttrProxyID  = "medmesh.proxy.id"
	AttrProxyKnd = "medmesh.proxy.kind"
	AttrTypeURL  = "xds.type_url"
	AttrVersion  = "xds.version"
	AttrOutcome  = "medmesh.xds.outcome" // ack, nack, superseded, disconnected, no_answer, not_set
	AttrNACK     = "xds.nack.message"
	AttrProxies  = "medmesh.xds.proxies"
)

// pushes is one round's push tracing, handed from Publish to the
// tracker. nil when the round is not traced.
type pushes struct {
	ctx    context.Context // carries the publish span: push spans are its children
	tracer trace.Tracer
	sum    *pushSummary // non-nil beyond PushSpanLimit
}

// pushSummary is the one span of a round with many proxies.
type pushSummary struct {
	span        trace.Span
	mu          sync.Mutex
	outstanding int
	acks, nacks int
	closed      bool // the round finished registering pushes
	ended       bool
}

// newPushes prepares push tracing for a round of n proxies, or returns
// nil when ctx's span does not record.
func newPushes(ctx context.Context, n int) *pushes {
	parent := trace.SpanFromContext(ctx)
	if !parent.IsRecording() {
		return nil
	}
	p := &pushes{ctx: ctx, tracer: parent.TracerProvider().Tracer("medmesh/controlplane/xds")}
	if n > PushSpanLimit {
		_, span := p.tracer.Start(ctx, "xds.push.summary", trace.WithAttributes(attribute.Int(AttrProxies, n)))
		p.sum = &pushSummary{span: span}
	}
	return p
}

// done marks the end of registration: the summary span ends once its
// outstanding pushes are answered.
func (p *pushes) done() {
	if p == nil || p.sum == nil {
		return
	}
	p.sum.mu.Lock()
	p.sum.closed = true
	p.sum.endIfDone()
	p.sum.mu.Unlock()
}

// endIfDone ends the summary span; callers hold mu.
func (s *pushSummary) endIfDone() {
	if s.ended || !s.closed || s.outstanding > 0 {
		return
	}
	s.ended = true
	s.span.SetAttributes(attribute.Int("medmesh.xds.acks", s.acks), attribute.Int("medmesh.xds.nacks", s.nacks))
	if s.nacks > 0 {
		s.span.SetStatus(codes.Error, "some proxies rejected the configuration")
	}
	s.span.End()
}

// pushAwait is one proxy's push waiting for its answers.
type pushAwait struct {
	proxy   string
	round   *pushes      // the round that pushed
	span    trace.Span   // own span; nil when summarised
	sum     *pushSummary // nil with an own span
	pending map[string]string
	types   map[string]bool // every type pushed, answered or not
	traceID string
	timer   *time.Timer
}

// startPush registers a push to proxy id of the changed types (type URL
// -> version). Called before the snapshot is set, so an ACK that comes
// back at once still finds it. Types the proxy has not subscribed to are
// not waited for (a proxyless client never asks for secrets).
func (t *Tracker) startPush(p *pushes, id string, changed map[string]string) {
	if p == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	pi, ok := t.proxies[id]
	if !ok {
		return
	}
	pending := make(map[string]string, len(changed))
	for typ, v := range changed {
		if pi.subscribed[typ] {
			pending[typ] = v
		}
	}
	if len(pending) == 0 {
		return
	}
	t.pushLocked(p, pi, pending, time.Time{})
}

// pushLocked registers a push of round p to proxy pi, waiting for the
// pending types (type URL -> version), starting at start (zero: now). A
// push of the same round still waiting (its endpoints went first) takes
// the new types in; one of an earlier round is superseded. Callers hold
// t.mu.
func (t *Tracker) pushLocked(p *pushes, pi *proxyInfo, pending map[string]string, start time.Time) {
	id := pi.status.ID
	if old := t.awaits[id]; old != nil {
		if old.round == p {
			for typ, v := range pending {
				old.pending[typ] = v
				old.types[typ] = true
			}
			if old.span != nil {
				old.span.SetAttributes(attribute.String("xds.types", typeList(old.types)))
			}
			return
		}
		t.finishLocked(old, "superseded", "")
	}
	a := &pushAwait{proxy: id, round: p, pending: pending, types: make(map[string]bool, len(pending))}
	for typ := range pending {
		a.types[typ] = true
	}
	if p.sum != nil && p.sum.join() {
		a.sum = p.sum
		a.traceID = p.sum.span.SpanContext().TraceID().String()
	} else {
		// Own span; also for an endpoint push that reached its proxy after
		// the round's summary span had ended (a proxy whose previous EDS
		// answer was still on its way), so that it is not lost.
		opts := []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(
			attribute.String(AttrProxyID, id), attribute.String(AttrProxyKnd, string(pi.status.Kind)),
			attribute.String("xds.types", typeList(a.types)))}
		if !start.IsZero() {
			opts = append(opts, trace.WithTimestamp(start))
		}
		_, a.span = p.tracer.Start(p.ctx, "xds.push", opts...)
		a.traceID = a.span.SpanContext().TraceID().String()
	}
	a.timer = time.AfterFunc(pushAnswerTimeout, func() {
		t.mu.Lock()
		defer t.mu.Unlock()
		if t.awaits[id] == a {
			t.finishLocked(a, "no_answer", "")
		}
	})
	t.awaits[id] = a
}

// join counts one more outstanding push on the summary, unless it has
// already ended.
func (s *pushSummary) join() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		return false
	}
	s.outstanding++
	return true
}

// typeList names the types pushed (CDS, EDS, ...), sorted.
func typeList(types map[string]bool) string {
	out := make([]string, 0, len(types))
	for typ := range types {
		out = append(out, shortTypeName(typ))
	}
	sort.Strings(out)
	return strings.Join(out, ",")
}

// pushNotSet ends a push whose snapshot could not be set.
func (t *Tracker) pushNotSet(id string, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if a := t.awaits[id]; a != nil {
		t.finishLocked(a, "not_set", err.Error())
	}
}

// answered records an ACK (nack == false) or NACK of version of typeURL
// by proxy id. Callers hold t.mu.
func (t *Tracker) answeredLocked(p *proxyInfo, typeURL, version string, nack bool, msg string) {
	a := t.awaits[p.status.ID]
	if a == nil || a.pending[typeURL] != version {
		return
	}
	if nack {
		if a.span != nil {
			a.span.SetAttributes(attribute.String(AttrTypeURL, typeURL), attribute.String(AttrVersion, version))
		}
		t.finishLocked(a, "nack", msg)
		return
	}
	delete(a.pending, typeURL)
	if a.span != nil {
		a.span.AddEvent("ack", trace.WithAttributes(attribute.String(AttrTypeURL, typeURL), attribute.String(AttrVersion, version)))
	}
	if len(a.pending) == 0 {
		p.status.TraceID = a.traceID
		t.finishLocked(a, "ack", "")
	}
}

// finishLocked ends a push: its own span, or its event on the summary.
// Callers hold t.mu.
func (t *Tracker) finishLocked(a *pushAwait, outcome, msg string) {
	if t.awaits[a.proxy] == a {
		delete(t.awaits, a.proxy)
	}
	if a.timer != nil {
		a.timer.Stop()
	}
	if a.span != nil {
		a.span.SetAttributes(attribute.String(AttrOutcome, outcome))
		switch outcome {
		case "nack", "not_set":
			a.span.SetAttributes(attribute.String(AttrNACK, msg))
			a.span.SetStatus(codes.Error, outcome)
		}
		a.span.End()
		return
	}
	s := a.sum
	attrs := []attribute.KeyValue{attribute.String(AttrProxyID, a.proxy), attribute.String(AttrOutcome, outcome)}
	if msg != "" {
		attrs = append(attrs, attribute.String(AttrNACK, msg))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.span.AddEvent("xds.push", trace.WithAttributes(attrs...))
	switch outcome {
	case "ack":
		s.acks++
	case "nack", "not_set":
		s.nacks++
	}
	s.outstanding--
	s.endIfDone()
}
