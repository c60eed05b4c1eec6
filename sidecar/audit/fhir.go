package audit

import (
	"strconv"

	"medmesh/internal/auditlog"
)

// PatientHashSystem identifies the keyed hash of a patient reference.
const PatientHashSystem = "urn:medmesh:patient-reference:hmac-sha256"

// outcome maps to FHIR's audit-event-outcome: 0 success, 4 minor failure
// (the caller's error), 8 serious failure (refused or failed), 12 major
// failure (no response at all).
func outcome(e Event) string {
	switch {
	case e.Shed || e.Status >= 500:
		return "8"
	case e.Status == 0:
		return "12"
	case e.Status >= 400:
		return "4"
	}
	return "0"
}

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
			{Type: "latencyMs", ValueString: strconv.FormatFloat(float64(e.End.Sub(e.Start).Microseconds())/1000, 'f', 3, 64)},
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
	return auditlog.AuditEvent{
		ResourceType: "AuditEvent",
		Type:         auditlog.RESTType,
		Subtype:      []auditlog.Coding{auditlog.MethodSubtype(e.Method)},
		Action:       auditlog.Action(e.Method),
		Period:       auditlog.Period{Start: auditlog.Timestamp(e.Start), End: auditlog.Timestamp(e.End)},
		Recorded:     auditlog.Timestamp(e.End),
		Outcome:      outcome(e),
		OutcomeDesc:  desc,
		Agent:        []auditlog.Agent{src, dst},
		Source: auditlog.Source{
			Site:     e.Service,
			Observer: auditlog.Reference{Identifier: auditlog.Identifier{System: auditlog.URISystem, Value: l.observer}},
			Type:     []auditlog.Coding{auditlog.AppServerSource},
		},
		Entity: []auditlog.Entity{ent},
	}
}
