// Package phi is the PHI sidecar's core, shared by the Envoy ext_proc
// server and the net/http and gRPC middleware: classify a request, cap
// its priority by the caller's identity, admit it through the priority
// scheduler, and write the audit record when it completes. It also holds
// what those front ends share around the core: the rules in force
// (swapped whole when the operator's file changes, so a request never
// sees half of a reload) and the request metrics.
package phi

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"medmesh/api/wire"
	"medmesh/sidecar/audit"
	"medmesh/sidecar/classify"
	"medmesh/sidecar/sched"
)

// Tag headers (CONTRACT.md). Inbound values are replaced, never trusted.
const (
	HeaderPHI      = "x-medmesh-phi"
	HeaderPriority = "x-medmesh-priority"
	HeaderClass    = "x-medmesh-class"
	// MetadataNamespace is the dynamic metadata namespace of the tags.
	MetadataNamespace = wire.MetadataNamespace
)

// Auditor records audit events (audit.Log; fakes in tests).
type Auditor interface {
	Record(audit.Event) error
}

// Options configure an Engine.
type Options struct {
	Rules     *Rules
	Scheduler *sched.Scheduler
	Audit     Auditor // nil: no audit trail (refused for PHI by the CLI)
	Logger    *slog.Logger
	Metrics   *Metrics // nil: no metrics
	// Tracer records one span per request (admission to response start)
	// with the tags as attributes, never request content; the global
	// provider's tracer by default.
	Tracer trace.Tracer
	// Service and Identity describe the protected service (destination).
	Service  string
	Identity string
	Now      func() time.Time
}

// Engine is safe for concurrent use.
type Engine struct {
	o Options
	// globalTracer: o.Tracer is the global provider's (Tracing).
	globalTracer bool
}

// New returns an engine; Rules, Scheduler and Logger default to built-in
// rules, a default scheduler and a discarding logger.
func New(o Options) *Engine {
	if o.Rules == nil {
		o.Rules = NewRules()
	}
	if o.Scheduler == nil {
		o.Scheduler = sched.New(sched.Config{})
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	global := o.Tracer == nil
	if global {
		o.Tracer = otel.Tracer("medmesh/sidecar")
	}
	return &Engine{o: o, globalTracer: global}
}

// Limit is the scheduler's configured concurrency per upstream: how many
// requests are normally in flight at once.
func (e *Engine) Limit() int { return e.o.Scheduler.Limit() }

// Input is a request as seen by a front end.
type Input struct {
	Method string
	Path   string
	// Header has lower-case names.
	Header map[string]string
	// Caller is the caller's SPIFFE ID ("" when unauthenticated).
	Caller      string
	PeerAddress string
	// Upstream keys the concurrency limit; defaults to the service.
	Upstream string
}

// Decision is a classification with the priority that will be applied.
type Decision struct {
	classify.Result
	// Classified is the rules' priority before the caller's cap and
	// requested lowering.
	Classified classify.Priority
	Caller     string
}

// Tags are the headers to set, names lower case.
func (d Decision) Tags() [3][2]string {
	phi := "false"
	if d.PHI {
		phi = "true"
	}
	return [3][2]string{{HeaderPHI, phi}, {HeaderPriority, d.Priority.String()}, {HeaderClass, d.Class}}
}

// Decide classifies in and resolves its priority: never above what the
// caller's identity allows, and lower if the caller asks for it (the
// inbound x-medmesh-priority header is honoured only downwards).
func (e *Engine) Decide(in Input) Decision {
	rs := e.o.Rules.current()
	res := rs.classifier.Classify(classify.NewRequest(in.Method, in.Path, in.Header))
	d := Decision{Result: res, Classified: res.Priority, Caller: in.Caller}
	d.Priority = classify.Lower(res.Priority, rs.callers.Max(in.Caller))
	if asked, ok := classify.ParsePriority(in.Header[HeaderPriority]); ok {
		d.Priority = classify.Lower(d.Priority, asked)
	}
	return d
}

// The span kinds as start options, made once (an option is an interface
// value: built per request, it is an allocation per request).
var (
	spanServer   = trace.WithSpanKind(trace.SpanKindServer)
	spanInternal = trace.WithSpanKind(trace.SpanKindInternal)
)

// Admission is an admitted (or refused) request until it is done.
type Admission struct {
	Decision
	e      *Engine
	in     Input
	start  time.Time
	ticket *sched.Ticket
	span   trace.Span
	once   sync.Once
	done   atomic.Bool
}

// Admit decides and waits for a slot. On refusal it returns the
// admission (already done and audited) and a *sched.ShedError; if ctx
// ends first, the context's error. The caller must call Done exactly
// once on a nil-error admission (extra calls are ignored).
func (e *Engine) Admit(ctx context.Context, in Input) (*Admission, error) {
	a := &Admission{Decision: e.Decide(in), e: e, in: in, start: e.o.Now()}
	up := in.Upstream
	if up == "" {
		up = e.o.Service
	}
	// Attributes are medmesh's own vocabulary; the path, headers and
	// patient reference stay out of traces. The parent is whatever span
	// ctx carries: the server span of an instrumented server (the
	// middleware), or the caller's or Envoy's span context that the front
	// end read from the W3C trace context (startKind).
	_, a.span = e.o.Tracer.Start(ctx, "medmesh.sidecar.admit", startKind(trace.SpanContextFromContext(ctx)))
	// Without an exporter the span records nothing: the attributes are
	// then not even built (they were a fifth of the allocations per
	// request of a sidecar that exports no traces).
	if a.span.IsRecording() {
		a.span.SetAttributes(
			attribute.Bool("medmesh.phi", a.PHI),
			attribute.String("medmesh.priority", a.Priority.String()),
			attribute.String("medmesh.class", a.Class),
			attribute.String("medmesh.rule", a.Rule),
			attribute.String("medmesh.upstream", up),
		)
	}
	tk, err := e.o.Scheduler.Acquire(ctx, up, a.Priority)
	if err != nil {
		var se *sched.ShedError
		switch {
		case errors.As(err, &se):
			e.o.Logger.Info("request shed", "priority", a.Priority.String(), "class", a.Class, "rule", a.Rule, "reason", se.Reason, "upstream", up)
			a.finish(503, se.Reason, true)
		default:
			a.finish(0, "cancelled while queued", false)
		}
		return a, err
	}
	a.ticket = tk
	if a.span.IsRecording() {
		a.span.SetAttributes(attribute.Float64("medmesh.queue_wait_ms", float64(tk.Waited().Microseconds())/1000))
	}
	e.o.Metrics.observeWait(a.Priority, tk.Waited())
	return a, nil
}

// Done releases the slot and writes the audit record. status is the
// response status (0 if none: stream reset, cancellation); reason says
// why there was none.
func (a *Admission) Done(status int, reason string) {
	a.finish(status, reason, false)
}

// Released reports whether Done has run.
func (a *Admission) Released() bool { return a.done.Load() }

func (a *Admission) finish(status int, reason string, shed bool) {
	a.once.Do(func() {
		defer a.done.Store(true)
		if a.ticket != nil {
			o := sched.Success
			switch {
			case status == 0:
				o = sched.Cancelled
			case status >= 500:
				o = sched.Dropped
			}
			a.ticket.Release(o)
		}
		outcome := "ok"
		switch {
		case shed:
			outcome = "shed"
		case status == 0:
			outcome = "cancelled"
		case status >= 500:
			outcome = "error"
		}
		a.e.o.Metrics.count(a.Priority, a.Class, outcome)
		if a.span.IsRecording() {
			a.span.SetAttributes(attribute.String("medmesh.outcome", outcome), attribute.Int("http.response.status_code", status))
			if shed || status >= 500 {
				a.span.SetStatus(codes.Error, outcome)
			}
		}
		a.span.End()
		if !a.PHI || a.e.o.Audit == nil {
			return
		}
		err := a.e.o.Audit.Record(audit.Event{
			Start: a.start, End: a.e.o.Now(), Method: a.in.Method, Status: status, Shed: shed, Reason: reason,
			Source: a.in.Caller, SourceAddress: a.in.PeerAddress, Destination: a.e.o.Identity, Service: a.e.o.Service,
			Class: a.Class, Priority: a.Priority, Rule: a.Rule, RequestID: requestID(a.in.Header["x-request-id"]), Patient: a.Patient,
		})
		if err != nil {
			a.e.o.Metrics.auditFailed()
			a.e.o.Logger.Error("audit record not written", "class", a.Class, "err", err)
		}
	})
}

// RetryAfter is the retry-after for a refusal, in whole seconds.
func RetryAfter(err error) int {
	var se *sched.ShedError
	if errors.As(err, &se) {
		return max(1, int(se.RetryAfter.Round(time.Second)/time.Second))
	}
	return 1
}

// requestID keeps x-request-id only when it is a UUID, the form Envoy
// generates: a caller can put anything in the header, including PHI.
func requestID(v string) string {
	if len(v) != 36 {
		return ""
	}
	for i, c := range v {
		switch {
		case i == 8 || i == 13 || i == 18 || i == 23:
			if c != '-' {
				return ""
			}
		case (c < '0' || c > '9') && (c < 'a' || c > 'f') && (c < 'A' || c > 'F'):
			return ""
		}
	}
	return v
}
