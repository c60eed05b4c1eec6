package auditlog

import (
	"net/http"
	"strconv"
	"time"
)

// The FHIR R4 AuditEvent subset medmesh's trails write. Field names and
// code systems are FHIR's, so records validate as AuditEvent resources
// and a hospital's FHIR audit repository ingests the lines as they are.
// What goes in them is each trail's business (sidecar/audit,
// controlplane/adminauth).
type AuditEvent struct {
	ResourceType string   `json:"resourceType"`
	Type         Coding   `json:"type"`
	Subtype      []Coding `json:"subtype,omitempty"`
	Action       string   `json:"action"`
	Period       Period   `json:"period"`
	Recorded     string   `json:"recorded"`
	Outcome      string   `json:"outcome"`
	OutcomeDesc  string   `json:"outcomeDesc,omitempty"`
	Agent        []Agent  `json:"agent"`
	Source       Source   `json:"source"`
	Entity       []Entity `json:"entity"`
}

type Coding struct {
	System  string `json:"system,omitempty"`
	Code    string `json:"code"`
	Display string `json:"display,omitempty"`
}

type CodeableConcept struct {
	Coding []Coding `json:"coding"`
}

type Period struct {
	Start string `json:"start"`
	End   string `json:"end"`
}

type Identifier struct {
	System string `json:"system"`
	Value  string `json:"value"`
}

type Reference struct {
	Identifier Identifier `json:"identifier"`
	Display    string     `json:"display,omitempty"`
}

type Network struct {
	Address string `json:"address"`
	Type    string `json:"type"`
}

type Agent struct {
	Type      CodeableConcept `json:"type"`
	Who       *Reference      `json:"who,omitempty"`
	Requestor bool            `json:"requestor"`
	Network   *Network        `json:"network,omitempty"`
}

type Source struct {
	Site     string    `json:"site,omitempty"`
	Observer Reference `json:"observer"`
	Type     []Coding  `json:"type"`
}

type Detail struct {
	Type        string `json:"type"`
	ValueString string `json:"valueString"`
}

type Entity struct {
	What   *Reference `json:"what,omitempty"`
	Type   *Coding    `json:"type,omitempty"`
	Role   *Coding    `json:"role,omitempty"`
	Detail []Detail   `json:"detail"`
}

// Code systems and codes both trails use.
const (
	DCM       = "http://dicom.nema.org/resources/ontology/DCM"
	URISystem = "urn:ietf:rfc:3986"
	// EntityTypeSystem is FHIR's audit-entity-type (1 Person, 2 System Object).
	EntityTypeSystem = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
)

var (
	// RESTType is the AuditEvent type of an HTTP call.
	RESTType = Coding{System: "http://terminology.hl7.org/CodeSystem/audit-event-type", Code: "rest", Display: "RESTful Operation"}
	// AppServerSource is the security-source-type of a medmesh observer.
	AppServerSource = Coding{System: "http://terminology.hl7.org/CodeSystem/security-source-type", Code: "4", Display: "Application Server"}
	// SourceRole and DestinationRole type an AuditEvent's two agents.
	SourceRole      = CodeableConcept{Coding: []Coding{{System: DCM, Code: "110153", Display: "Source Role ID"}}}
	DestinationRole = CodeableConcept{Coding: []Coding{{System: DCM, Code: "110152", Display: "Destination Role ID"}}}
)

// REST returns what every trail's record of one HTTP call shares: the
// event type, the method as subtype and action, the period, and the
// outcome from the response status (FHIR audit-event-outcome: 0 success,
// 4 minor failure (the caller's error), 8 serious failure, 12 major
// failure (no response at all)).
func REST(method string, start, end time.Time, status int) AuditEvent {
	outcome := "0"
	switch {
	case status >= 500:
		outcome = "8"
	case status == 0:
		outcome = "12"
	case status >= 400:
		outcome = "4"
	}
	return AuditEvent{
		ResourceType: "AuditEvent",
		Type:         RESTType,
		Subtype:      []Coding{MethodSubtype(method)},
		Action:       Action(method),
		Period:       Period{Start: Timestamp(start), End: Timestamp(end)},
		Recorded:     Timestamp(end),
		Outcome:      outcome,
	}
}

// LatencyMs is a call's duration in milliseconds as a detail value.
func LatencyMs(start, end time.Time) string {
	return strconv.FormatFloat(float64(end.Sub(start).Microseconds())/1000, 'f', 3, 64)
}

// Timestamp is FHIR's instant, in UTC.
func Timestamp(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

// Action maps an HTTP method to the AuditEvent action (C, R, U, D, E).
func Action(method string) string {
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

// MethodSubtype is the subtype naming the HTTP method; only standard
// methods are kept (the method is caller input, and nothing a caller
// sends is written to a trail unchecked), any other is "OTHER".
func MethodSubtype(m string) Coding {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace:
	default:
		m = "OTHER"
	}
	return Coding{System: "urn:medmesh:http-method", Code: m}
}
