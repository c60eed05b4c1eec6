package audit

import (
	"net/http"
	"strconv"
	"time"
)

// The FHIR R4 AuditEvent subset medmesh writes. Field names and code
// systems are FHIR's, so records validate as AuditEvent resources.
type auditEvent struct {
	ResourceType string   `json:"resourceType"`
	Type         coding   `json:"type"`
	Subtype      []coding `json:"subtype,omitempty"`
	Action       string   `json:"action"`
	Period       period   `json:"period"`
	Recorded     string   `json:"recorded"`
	Outcome      string   `json:"outcome"`
	OutcomeDesc  string   `json:"outcomeDesc,omitempty"`
	Agent        []agent  `json:"agent"`
	Source       source   `json:"source"`
	Entity       []entity `json:"entity"`
}

type coding struct {
	System  string `json:"system,omitempty"`
	Code    string `json:"code"`
	Display string `json:"display,omitempty"`
}

type codeableConcept struct {
	Coding []coding `json:"coding"`
}

type period struct {
	Start string `json:"start"`
	End   string `json:"end"`
}

type identifier struct {
	System string `json:"system"`
	Value  string `json:"value"`
}

type reference struct {
	Identifier identifier `json:"identifier"`
	Display    string     `json:"display,omitempty"`
}

type network struct {
	Address string `json:"address"`
	Type    string `json:"type"`
}

type agent struct {
	Type      codeableConcept `json:"type"`
	Who       *reference      `json:"who,omitempty"`
	Requestor bool            `json:"requestor"`
	Network   *network        `json:"network,omitempty"`
}

type source struct {
	Site     string    `json:"site,omitempty"`
	Observer reference `json:"observer"`
	Type     []coding  `json:"type"`
}

type detail struct {
	Type        string `json:"type"`
	ValueString string `json:"valueString"`
}

type entity struct {
	What   *reference `json:"what,omitempty"`
	Type   *coding    `json:"type,omitempty"`
	Role   *coding    `json:"role,omitempty"`
	Detail []detail   `json:"detail"`
}

const (
	dcm       = "http://dicom.nema.org/resources/ontology/DCM"
	uriSystem = "urn:ietf:rfc:3986"
	// PatientHashSystem identifies the keyed hash of a patient reference.
	PatientHashSystem = "urn:medmesh:patient-reference:hmac-sha256"
)

func action(method string) string {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return "R"
	case http.MethodPost:
		return "C"
	case http.MethodPut, http.MethodPatch:
		return "U"
	case http.MethodDelete:
		return "D"
	}
	return "E"
}

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

func (l *Log) toAuditEvent(e Event) auditEvent {
	ts := func(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }
	desc := strconv.Itoa(e.Status)
	switch {
	case e.Shed:
		desc = "shed by medmesh: " + e.Reason
	case e.Status == 0:
		desc = "no response: " + e.Reason
	}
	src := agent{
		Type:      codeableConcept{Coding: []coding{{System: dcm, Code: "110153", Display: "Source Role ID"}}},
		Requestor: true,
	}
	if e.Source != "" {
		src.Who = &reference{Identifier: identifier{System: uriSystem, Value: e.Source}}
	} else {
		src.Who = &reference{Identifier: identifier{System: uriSystem, Value: "unauthenticated"}}
	}
	if e.SourceAddress != "" {
		src.Network = &network{Address: e.SourceAddress, Type: "2"} // 2 = IP address
	}
	dst := agent{
		Type:      codeableConcept{Coding: []coding{{System: dcm, Code: "110152", Display: "Destination Role ID"}}},
		Who:       &reference{Identifier: identifier{System: uriSystem, Value: e.Destination}, Display: e.Service},
		Requestor: false,
	}
	ent := entity{
		Type: &coding{System: "http://terminology.hl7.org/CodeSystem/audit-entity-type", Code: "2", Display: "System Object"},
		Detail: []detail{
			{Type: "dataClass", ValueString: e.Class},
			{Type: "priority", ValueString: e.Priority.String()},
			{Type: "rule", ValueString: e.Rule},
			{Type: "latencyMs", ValueString: strconv.FormatFloat(float64(e.End.Sub(e.Start).Microseconds())/1000, 'f', 3, 64)},
		},
	}
	if e.RequestID != "" {
		ent.Detail = append(ent.Detail, detail{Type: "requestId", ValueString: e.RequestID})
	}
	if !e.Patient.Empty() {
		ent.What = &reference{Identifier: identifier{System: PatientHashSystem, Value: HashPatient(l.opts.Key, e.Patient.Reveal())}}
		ent.Type = &coding{System: "http://terminology.hl7.org/CodeSystem/audit-entity-type", Code: "1", Display: "Person"}
		ent.Role = &coding{System: "http://terminology.hl7.org/CodeSystem/object-role", Code: "1", Display: "Patient"}
	}
	return auditEvent{
		ResourceType: "AuditEvent",
		Type:         coding{System: "http://terminology.hl7.org/CodeSystem/audit-event-type", Code: "rest", Display: "RESTful Operation"},
		Subtype:      []coding{{System: "urn:medmesh:http-method", Code: safeMethod(e.Method)}},
		Action:       action(e.Method),
		Period:       period{Start: ts(e.Start), End: ts(e.End)},
		Recorded:     ts(e.End),
		Outcome:      outcome(e),
		OutcomeDesc:  desc,
		Agent:        []agent{src, dst},
		Source: source{
			Site:     e.Service,
			Observer: reference{Identifier: identifier{System: uriSystem, Value: l.opts.Observer}},
			Type:     []coding{{System: "http://terminology.hl7.org/CodeSystem/security-source-type", Code: "4", Display: "Application Server"}},
		},
		Entity: []entity{ent},
	}
}

// safeMethod keeps only standard methods: the method is caller input and
// nothing a caller sends is written to the trail unchecked.
func safeMethod(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return m
	}
	return "OTHER"
}
