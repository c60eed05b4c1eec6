package adminauth

import (
	"strconv"
	"time"

	"medmesh/internal/auditlog"
)

// Trail is the control plane's admin audit file (--audit-log): a FHIR
// AuditEvent JSON line per audited admin call, through the writer the
// sidecar's HIPAA trail uses (internal/auditlog: 0600, rotated, fsynced
// per record). It names who did what, when and the outcome; never a
// credential, never the query string.
type Trail struct {
	w        *auditlog.Writer[trailEvent]
	observer string
}

// trailEvent is one audited admin call, as written to the Trail.
type trailEvent struct {
	Start, End time.Time
	// Who is the principal's ID ("unauthenticated" when there was none);
	// Remote is the peer's IP address.
	Who, Remote string
	// Method and Path are the call (the path sanitised by safePath).
	Method, Path string
	Status       int
	// Rule is how the call was judged: "role R via V", or "refused: why".
	Rule string
}

// OpenTrail opens (appending to) or creates the admin audit trail at
// path; observer names this control plane in its records.
func OpenTrail(path, observer string) (*Trail, error) {
	t := &Trail{observer: observer}
	w, err := auditlog.Open(auditlog.Options{Path: path}, t.toAuditEvent)
	if err != nil {
		return nil, err
	}
	t.w = w
	return t, nil
}

// Close fsyncs and closes the trail.
func (t *Trail) Close() error { return t.w.Close() }

func (t *Trail) record(e trailEvent) error { return t.w.Record(e) }

// toAuditEvent keeps the shape the admin trail has always had: the caller
// as source agent, this control plane as destination, the route as the
// entity's dataClass ("admin /join-tokens").
func (t *Trail) toAuditEvent(e trailEvent) any {
	src := auditlog.Agent{
		Type:      auditlog.SourceRole,
		Who:       &auditlog.Reference{Identifier: auditlog.Identifier{System: auditlog.URISystem, Value: e.Who}},
		Requestor: true,
	}
	if e.Remote != "" {
		src.Network = &auditlog.Network{Address: e.Remote, Type: "2"} // 2 = IP address
	}
	const site = "medmesh-admin"
	ev := auditlog.REST(e.Method, e.Start, e.End, e.Status)
	ev.OutcomeDesc = strconv.Itoa(e.Status)
	ev.Agent = []auditlog.Agent{src, {
		Type:      auditlog.DestinationRole,
		Who:       &auditlog.Reference{Identifier: auditlog.Identifier{System: auditlog.URISystem, Value: t.observer}, Display: site},
		Requestor: false,
	}}
	ev.Source = auditlog.Source{
		Site:     site,
		Observer: auditlog.Reference{Identifier: auditlog.Identifier{System: auditlog.URISystem, Value: t.observer}},
		Type:     []auditlog.Coding{auditlog.AppServerSource},
	}
	ev.Entity = []auditlog.Entity{{
		Type: &auditlog.Coding{System: auditlog.EntityTypeSystem, Code: "2", Display: "System Object"},
		Detail: []auditlog.Detail{
			{Type: "dataClass", ValueString: "admin " + e.Path},
			{Type: "rule", ValueString: e.Rule},
			{Type: "latencyMs", ValueString: auditlog.LatencyMs(e.Start, e.End)},
		},
	}}
	return ev
}
