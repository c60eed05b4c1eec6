package classify

import (
	"strings"
)

// Builtin returns the built-in rules in evaluation order. Order matters:
// alerts come before the generic vitals stream, and the format-specific
// rules (DICOMweb, HL7 v2) before FHIR, whose detection is the loosest.
func Builtin() []Rule {
	return []Rule{
		{
			// Health checks stay high: shedding them makes the platform
			// eject a busy instance, which turns overload into an outage.
			Name: "health", Class: "health", Priority: High, Source: "builtin",
			Match: Match{Methods: []string{"GET", "HEAD", "POST"}, PathRegex: reHealth},
		},
		{
			Name: "vitals.alert", PHI: true, Class: "vitals.alert", Priority: Critical, Source: "builtin",
			Match: Match{Segments: []string{"cardiac_arrest_alert", "code_blue", "rapid_response_alert", "alarm"}},
		},
		{
			Name: "device.control", PHI: true, Class: "device.control", Priority: Critical, Source: "builtin",
			Match: Match{Segments: []string{"defibrillator_control", "infusion_pump_control", "ventilator_control"}},
		},
		{
			Name: "vitals.ecg", PHI: true, Class: "vitals.ecg", Priority: High, Source: "builtin",
			Match: Match{Segments: []string{"ecg_realtime", "ecg", "ekg"}},
		},
		{
			Name: "vitals.spo2", PHI: true, Class: "vitals.spo2", Priority: High, Source: "builtin",
			Match: Match{Segments: []string{"spo2", "pulse_oximetry"}},
		},
		{
			Name: "device.status", Class: "device.status", Priority: Background, Source: "builtin",
			Match: Match{Segments: []string{"device_status", "heartbeat", "telemetry_status"}},
		},
		{
			Name: "vitals.stream", PHI: true, Class: "vitals.stream", Priority: High, Source: "builtin",
			Match: Match{Segments: []string{"vitals"}},
		},
		{
			// Signalling carries session descriptions, not clinical
			// content; call set-up latency is what a clinician feels.
			Name: "webrtc.signalling", Class: "webrtc.signalling", Priority: High, Source: "builtin",
			Match: Match{Segments: []string{"webrtc", "signalling", "signaling", "sdp", "ice"}},
		},
		{
			Name: "webrtc.sdp", Class: "webrtc.signalling", Priority: High, Source: "builtin",
			Match: Match{MediaTypes: []string{"application/sdp", "application/trickle-ice-sdpfrag"}},
		},
		{Name: "dicomweb", Source: "builtin", fn: dicomRule},
		{
			Name: "hl7v2", PHI: true, Class: "hl7v2.message", Priority: Medium, Source: "builtin",
			Match: Match{MediaTypes: []string{"x-application/hl7-v2+er7", "application/hl7-v2", "application/hl7-v2+er7",
				"application/edi-hl7", "application/x-hl7", "application/hl7-v2+xml"}},
		},
		{
			Name: "hl7v2.path", PHI: true, Class: "hl7v2.message", Priority: Medium, Source: "builtin",
			Match: Match{Methods: []string{"POST", "PUT"}, Segments: []string{"hl7", "hl7v2"}},
		},
		{Name: "fhir", Source: "builtin", fn: fhirRule},
		{
			Name: "lab.results", PHI: true, Class: "lab.result", Priority: Medium, Source: "builtin",
			Match: Match{Segments: []string{"lab_results", "labs", "results"}},
		},
		{
			Name: "records", PHI: true, Class: "record", Priority: Low, Source: "builtin",
			Match: Match{Segments: []string{"records", "chart", "documents"}},
		},
	}
}

// fhirMediaTypes are FHIR's media types, R4 and the legacy DSTU2 ones.
var fhirMediaTypes = []string{"application/fhir+json", "application/fhir+xml", "application/json+fhir", "application/xml+fhir", "application/fhir+ndjson"}

// fhirRule recognises FHIR REST interactions: instance and type
// interactions, compartments (Patient/1/Observation), _history, _search,
// operations ($everything) and the capability statement (/metadata).
func fhirRule(r *Request, res *Result) bool {
	segs := r.Segments()
	fhirMedia := mediaMatches(r, fhirMediaTypes)
	idx := -1
	for i, s := range segs {
		if isFHIRResource(s, fhirMedia) {
			idx = i
			break
		}
	}
	if idx < 0 {
		return fhirSystemLevel(r, segs, fhirMedia, res)
	}
	resource, rest := segs[idx], segs[idx+1:]
	id := ""
	if len(rest) > 0 && !strings.HasPrefix(rest[0], "_") && !strings.HasPrefix(rest[0], "$") {
		id, rest = rest[0], rest[1:]
	}
	target := resource
	res.Rule = "fhir.read"
	switch {
	case id != "" && len(rest) > 0 && isFHIRResource(rest[0], true):
		target, rest = rest[0], rest[1:]
		res.Rule = "fhir.compartment"
	case id == "" && r.Method == "GET", len(rest) > 0 && rest[0] == "_search":
		res.Rule = "fhir.search"
	case r.Method != "GET" && r.Method != "HEAD":
		res.Rule = "fhir.write"
	}
	res.Class = fhirClass(target)
	res.PHI = patientCompartment[resource] || patientCompartment[target] || (!nonPHIResources[target] && !nonPHIResources[resource])
	res.Priority = fhirPriority(target)
	for _, s := range rest {
		switch {
		case s == "_history":
			res.Rule, res.Priority = "fhir.history", Low
		case s == "$everything":
			res.Rule, res.Priority = "fhir.everything", Low
		case s == "$export":
			res.Rule, res.Priority = "fhir.export", Background
		case strings.HasPrefix(s, "$"):
			res.Rule = "fhir.operation"
		}
	}
	if res.PHI {
		if resource == "Patient" && id != "" {
			res.Patient = NewSecret("Patient/" + id)
		} else {
			res.Patient = patientFromQuery(r)
		}
	}
	return true
}

// fhirSystemLevel handles interactions on the FHIR base itself.
func fhirSystemLevel(r *Request, segs []string, fhirMedia bool, res *Result) bool {
	hasBase := fhirMedia
	for _, s := range segs {
		if strings.EqualFold(s, "fhir") {
			hasBase = true
		}
	}
	if !hasBase {
		return false
	}
	last := ""
	if len(segs) > 0 {
		last = segs[len(segs)-1]
	}
	switch {
	case last == "metadata":
		*res = Result{Class: "fhir.CapabilityStatement", Priority: Background, Rule: "fhir.metadata"}
	case last == "_history":
		*res = Result{PHI: true, Class: "fhir.history", Priority: Low, Rule: "fhir.history"}
	case last == "$export":
		*res = Result{PHI: true, Class: "fhir.export", Priority: Background, Rule: "fhir.export"}
	case strings.HasPrefix(last, "$"):
		*res = Result{PHI: true, Class: "fhir.operation", Priority: Low, Rule: "fhir.operation"}
	default:
		// A transaction or batch Bundle may hold any resource: PHI.
		*res = Result{PHI: true, Class: "fhir.Bundle", Priority: Low, Rule: "fhir.system"}
	}
	if res.PHI {
		res.Patient = patientFromQuery(r)
	}
	return true
}

// isFHIRResource: a known resource type, or (on a request that says it is
// FHIR) any capitalised alphabetic segment; an unknown type is then
// treated as PHI, the safe side.
func isFHIRResource(s string, fhirMedia bool) bool {
	if patientCompartment[s] || nonPHIResources[s] {
		return true
	}
	if !fhirMedia || s == "" || s[0] < 'A' || s[0] > 'Z' {
		return false
	}
	for _, c := range s {
		if (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') {
			return false
		}
	}
	return true
}

// fhirClass names the data class. Only known resource types become part
// of a class: a path segment that merely looks like one (/fhir/JaneDoe)
// is caller input and could be PHI, and classes reach headers, logs and
// metric labels.
func fhirClass(resource string) string {
	if patientCompartment[resource] || nonPHIResources[resource] {
		return "fhir." + resource
	}
	return "fhir.other"
}

func fhirPriority(resource string) Priority {
	switch resource {
	case "MedicationRequest", "MedicationAdministration", "Flag", "AllergyIntolerance", "DetectedIssue":
		return High // orders and safety flags gate treatment
	case "Observation", "DiagnosticReport", "ImagingStudy", "Specimen", "ServiceRequest", "Media":
		return Medium // results and images
	case "CodeSystem", "ValueSet", "ConceptMap", "StructureDefinition", "SearchParameter", "CapabilityStatement", "OperationDefinition":
		return Background // terminology and conformance, cacheable
	}
	return Low // records
}

// patientCompartment are the resource types of FHIR R4's Patient
// compartment: they hold data about one patient.
var patientCompartment = setOf("Account", "AdverseEvent", "AllergyIntolerance", "Appointment", "AppointmentResponse",
	"AuditEvent", "Basic", "BodyStructure", "CarePlan", "CareTeam", "ChargeItem", "Claim", "ClaimResponse",
	"ClinicalImpression", "Communication", "CommunicationRequest", "Composition", "Condition", "Consent", "Coverage",
	"CoverageEligibilityRequest", "CoverageEligibilityResponse", "DetectedIssue", "DeviceRequest", "DeviceUseStatement",
	"DiagnosticReport", "DocumentManifest", "DocumentReference", "Encounter", "EnrollmentRequest", "EpisodeOfCare",
	"ExplanationOfBenefit", "FamilyMemberHistory", "Flag", "Goal", "Group", "ImagingStudy", "Immunization",
	"ImmunizationEvaluation", "ImmunizationRecommendation", "Invoice", "List", "MeasureReport", "Media",
	"MedicationAdministration", "MedicationDispense", "MedicationRequest", "MedicationStatement", "MolecularSequence",
	"NutritionOrder", "Observation", "Patient", "Person", "Procedure", "Provenance", "QuestionnaireResponse",
	"RelatedPerson", "RequestGroup", "ResearchSubject", "RiskAssessment", "Schedule", "ServiceRequest", "Specimen",
	"SupplyDelivery", "SupplyRequest", "VisionPrescription")

// nonPHIResources are common resource types that describe the
// organisation, terminology or conformance, not a patient.
var nonPHIResources = setOf("Practitioner", "PractitionerRole", "Organization", "Location", "HealthcareService",
	"Endpoint", "Device", "DeviceDefinition", "Medication", "MedicationKnowledge", "Substance", "CodeSystem", "ValueSet",
	"ConceptMap", "StructureDefinition", "SearchParameter", "CapabilityStatement", "OperationDefinition",
	"Questionnaire", "PlanDefinition", "ActivityDefinition", "Library", "Measure", "NamingSystem", "Binary")

func setOf(names ...string) map[string]bool {
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[n] = true
	}
	return m
}

// dicomRule recognises DICOMweb: QIDO-RS searches, WADO-RS retrieves
// (study, series, instance, frames, rendered, metadata), STOW-RS stores,
// and WADO-URI. Everything DICOM is PHI: headers carry demographics.
func dicomRule(r *Request, res *Result) bool {
	segs := r.Segments()
	studies := -1
	for i, s := range segs {
		if s == "studies" || (s == "instances" && i == 0) || (s == "series" && i == 0) {
			studies = i
			break
		}
	}
	ct := strings.ToLower(r.Header["content-type"])
	dicomMedia := mediaMatches(r, []string{"application/dicom", "application/dicom+json", "application/dicom+xml"}) ||
		(strings.HasPrefix(ct, "multipart/related") && strings.Contains(ct, "application/dicom"))
	wadoURI := r.Query().Get("requestType") == "WADO"
	if studies < 0 && !dicomMedia && !wadoURI {
		return false
	}
	res.PHI = true
	res.Patient = patientFromQuery(r)
	switch {
	case wadoURI:
		res.Class, res.Priority, res.Rule = "dicom.instance", Medium, "dicom.wado-uri"
		return true
	case r.Method == "POST" || r.Method == "PUT":
		res.Class, res.Priority, res.Rule = "dicom.store", Low, "dicom.stow"
		return true
	case r.Method == "DELETE":
		res.Class, res.Priority, res.Rule = "dicom.delete", Low, "dicom.delete"
		return true
	}
	if studies < 0 {
		res.Class, res.Priority, res.Rule = "dicom.instance", Medium, "dicom.media"
		return true
	}
	// Walk level/uid pairs: studies/{uid}/series/{uid}/instances/{uid}/...
	rest := segs[studies:]
	level, withUID := "", false
	for i := 0; i < len(rest); i++ {
		switch rest[i] {
		case "studies", "series", "instances":
			level, withUID = rest[i], i+1 < len(rest)
			if withUID {
				i++
			}
		case "frames", "rendered", "thumbnail", "bulkdata", "pixeldata":
			res.Class, res.Priority, res.Rule = "dicom.instance", Medium, "dicom.wado-rs"
			return true
		case "metadata":
			res.Class, res.Priority, res.Rule = "dicom.metadata", Medium, "dicom.wado-rs"
			return true
		}
	}
	switch {
	case !withUID:
		res.Class, res.Priority, res.Rule = "dicom.query", Medium, "dicom.qido"
	case level == "instances":
		res.Class, res.Priority, res.Rule = "dicom.instance", Medium, "dicom.wado-rs"
	default:
		// Whole studies and series are bulk transfers: they must not hold
		// slots an alert needs.
		res.Class, res.Priority, res.Rule = "dicom.series", Low, "dicom.wado-rs"
		if level == "studies" {
			res.Class = "dicom.study"
		}
	}
	return true
}
