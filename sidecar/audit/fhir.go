package audit

import (
	"strconv"

	"medmesh/internal/auditlog"
)

// PatientHashSystem identifies the keyed hash of a patient reference.
const PatientHashSystem = "urn:medmesh:patient-reference:hmac-sha256"

// toAuditEvent is the FHIR form of one PHI request: names and codes,
// never content; the patient only as a keyed hash.
func (l *Log) toAuditEvent(e Event) auditlog.AuditEvent {
	desc := strconv.Itoa(e.Status)
	switch {
	case e.Shed:
		desc = "shed by medmesh: " + e.Reason
	case e.Status == 0:
		desc = "no response: " + e.Reason
	}
	src := auditlog.Agent{Type: auditlog.SourceRole, Requestor: true}
	if e.Source != "" {
		src.Who = &auditlog.Reference{Identifier: auditlog.Identifier{System: auditlog.URISystem, Value: e.Source}}
	} else {
		src.Who = &auditlog.Reference{Identifier: auditlog.Identifier{System: auditlog.URISystem, Value: "unauthenticated"}}
	}
	if e.SourceAddress != "" {
		src.Network = &auditlog.Network{Address: e.SourceAddress, Type: "2"} // 2 = IP address
	}
	dst := auditlog.Agent{
		Type:      auditlog.DestinationRole,
		Who:       &auditlog.Reference{Identifier: auditlog.Identifier{System: auditlog.URISystem, Value: e.Destination}, Display: e.Service},
		Requestor: false,
	}
	ent := auditlog.Entity{
		Type: &auditlog.Coding{System: auditlog.EntityTypeSystem, Code: "2", Display: "System Object"},
		Detail: []auditlog.Detail{
			{Type: "dataClass", ValueString: e.Class},
			{Type: "priority", ValueString: e.Priority.String()},
			{Type: "rule", ValueString: e.Rule},
			{Type: "latencyMs", ValueString: auditlog.LatencyMs(e.Start, e.End)},
		},
	}
	if e.RequestID != "" {
		ent.Detail = append(ent.Detail, auditlog.Detail{Type: "requestId", ValueString: e.RequestID})
	}
	if !e.Patient.Empty() {
		ent.What = &auditlog.Reference{Identifier: auditlog.Identifier{System: PatientHashSystem, Value: l.hashPatient(e.Patient.Reveal())}}
		ent.Type = &auditlog.Coding{System: auditlog.EntityTypeSystem, Code: "1", Display: "Person"}
		ent.Role = &auditlog.Coding{System: "http://terminology.hl7.org/CodeSystem/object-role", Code: "1", Display: "Patient"}
	}
	ev := auditlog.REST(e.Method, e.Start, e.End, e.Status)
	if e.Shed {
		ev.Outcome = "8" // refused by medmesh: a serious failure whatever the status
	}
	ev.OutcomeDesc = desc
	ev.Agent = []auditlog.Agent{src, dst}
	ev.Source = auditlog.Source{
		Site:     e.Service,
		Observer: auditlog.Reference{Identifier: auditlog.Identifier{System: auditlog.URISystem, Value: l.observer}},
		Type:     []auditlog.Coding{auditlog.AppServerSource},
	}
	ev.Entity = []auditlog.Entity{ent}
	return ev
}
