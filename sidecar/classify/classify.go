// Package classify decides, from a request's method, path and headers,
// whether it carries PHI, which data class it belongs to and how urgent it
// is clinically. Rules are evaluated in order and the first match wins;
// operator rules (a YAML file) come before the built-in ones, so an
// operator can override any built-in decision without copying it.
//
// Classification never reads bodies: every built-in rule decides from the
// request line and headers, which keeps the ext_proc extension on Envoy's
// header phase (no body buffering, no added memory per PHI request).
package classify

import (
	"log/slog"
	"net/url"
	"regexp"
	"strings"
)

// Priority is a clinical priority. Lower values are more urgent, so a
// priority is also an index into per-priority arrays.
type Priority int8

// Priorities, most urgent first.
const (
	Critical Priority = iota
	High
	Medium
	Low
	Background
)

// NumPriorities is the number of priority levels.
const NumPriorities = 5

var priorityNames = [NumPriorities]string{"critical", "high", "medium", "low", "background"}

func (p Priority) String() string {
	if p < 0 || int(p) >= NumPriorities {
		return "invalid"
	}
	return priorityNames[p]
}

// Valid reports whether p is one of the five levels.
func (p Priority) Valid() bool { return p >= 0 && int(p) < NumPriorities }

// ParsePriority parses a priority name (case-insensitive, spaces trimmed).
func ParsePriority(s string) (Priority, bool) {
	s = strings.ToLower(strings.TrimSpace(s))
	for i, n := range priorityNames {
		if n == s {
			return Priority(i), true
		}
	}
	return 0, false
}

// Lower returns the less urgent of p and q.
func Lower(p, q Priority) Priority { return max(p, q) }

// Secret holds a value that is PHI (a patient reference). It formats,
// logs and marshals as "[redacted]" so that a careless log line or JSON
// dump cannot leak it; only Reveal returns the value, and only the audit
// package calls it, to compute a keyed hash.
type Secret struct{ v string }

// NewSecret wraps a PHI value.
func NewSecret(v string) Secret { return Secret{v: v} }

// Reveal returns the raw value. Never log it.
func (s Secret) Reveal() string { return s.v }

// Empty reports whether no value is held.
func (s Secret) Empty() bool { return s.v == "" }

func (s Secret) String() string { return "[redacted]" }

// GoString keeps %#v from printing the value.
func (s Secret) GoString() string { return "[redacted]" }

// LogValue keeps slog from printing the value.
func (s Secret) LogValue() slog.Value { return slog.StringValue("[redacted]") }

// MarshalJSON keeps encoding/json from printing the value.
func (s Secret) MarshalJSON() ([]byte, error) { return []byte(`"[redacted]"`), nil }

// Request is what classification looks at.
type Request struct {
	Method string
	// Path is the request target as sent (:path), query included.
	Path string
	// Header holds request headers with lower-case names.
	Header map[string]string

	parsed bool
	path   string     // path without query, unescaped
	query  url.Values // parsed query
	segs   []string   // non-empty path segments
	nsegs  []string   // segs normalised for segment rules, on first use
}

func (r *Request) normSegments() []string {
	if r.nsegs == nil {
		segs := r.Segments()
		r.nsegs = make([]string, len(segs))
		for i, s := range segs {
			r.nsegs[i] = normalizeSegment(s)
		}
	}
	return r.nsegs
}

// NewRequest builds a request; header names are lower-cased. A map whose
// names are all lower case already (what the sidecar's front ends pass)
// is used as it is, not copied: classification only reads it, and the
// copy was a large share of the extension's allocations per request.
func NewRequest(method, path string, header map[string]string) *Request {
	h := header
	for k := range header {
		if !isLower(k) {
			h = make(map[string]string, len(header))
			for k, v := range header {
				h[strings.ToLower(k)] = v
			}
			break
		}
	}
	return &Request{Method: strings.ToUpper(method), Path: path, Header: h}
}

func isLower(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' || c >= 0x80 {
			return false
		}
	}
	return true
}

func (r *Request) parse() {
	if r.parsed {
		return
	}
	r.parsed = true
	p, q, _ := strings.Cut(r.Path, "?")
	if i := strings.IndexByte(p, '#'); i >= 0 {
		p = p[:i]
	}
	if u, err := url.PathUnescape(p); err == nil {
		p = u
	}
	r.path = p
	// A malformed query is classified on what parses; ParseQuery returns
	// the valid pairs alongside its error.
	r.query, _ = url.ParseQuery(q)
	for s := range strings.SplitSeq(p, "/") {
		if s != "" {
			r.segs = append(r.segs, s)
		}
	}
}

// CleanPath is the path without query or fragment, unescaped.
func (r *Request) CleanPath() string { r.parse(); return r.path }

// Segments are the non-empty path segments.
func (r *Request) Segments() []string { r.parse(); return r.segs }

// Query is the parsed query string.
func (r *Request) Query() url.Values { r.parse(); return r.query }

// MediaType is the content type without parameters, lower-cased.
func (r *Request) MediaType() string { return mediaType(r.Header["content-type"]) }

func mediaType(v string) string {
	v, _, _ = strings.Cut(v, ";")
	return strings.ToLower(strings.TrimSpace(v))
}

// Result is a classification.
type Result struct {
	PHI      bool
	Class    string
	Priority Priority
	// Rule names the rule that matched, for audit and debugging.
	Rule string
	// Patient is the patient reference the request is about, when the
	// request names one. It is PHI: it only ever leaves this process as
	// a keyed hash in the audit trail.
	Patient Secret
}

// Default is the result for traffic no rule recognises. Unknown traffic
// is not tagged as PHI (we cannot tell) and gets medium priority, so it
// neither starves nor jumps clinical alerts.
var Default = Result{PHI: false, Class: "unknown", Priority: Medium, Rule: "default"}

// Rule is one classification rule.
type Rule struct {
	Name     string
	PHI      bool
	Class    string
	Priority Priority
	Match    Match
	// fn replaces Match and the fixed outcome for built-in rules that
	// need parsing (FHIR, DICOMweb); it reports whether it matched.
	fn func(*Request, *Result) bool
	// Source is where the rule was defined ("builtin" or "file:line").
	Source string
}

// Classifier holds an ordered rule list. It is immutable, so it may be
// shared by goroutines and swapped atomically on reload.
type Classifier struct {
	rules []Rule
}

// New returns a classifier with the given rules before the built-in ones.
func New(operator []Rule) *Classifier {
	rules := append(append([]Rule(nil), operator...), Builtin()...)
	for i := range rules {
		m := &rules[i].Match
		m.normSegments = make([]string, len(m.Segments))
		for j, s := range m.Segments {
			m.normSegments[j] = normalizeSegment(s)
		}
	}
	return &Classifier{rules: rules}
}

// Rules returns the rules in evaluation order.
func (c *Classifier) Rules() []Rule { return append([]Rule(nil), c.rules...) }

// Classify returns the first matching rule's result, or Default.
func (c *Classifier) Classify(r *Request) Result {
	for i := range c.rules {
		rule := &c.rules[i]
		if rule.fn != nil {
			res := Result{Rule: rule.Name}
			if rule.fn(r, &res) {
				return res
			}
			continue
		}
		if rule.Match.matches(r) {
			res := Result{PHI: rule.PHI, Class: rule.Class, Priority: rule.Priority, Rule: rule.Name}
			if rule.PHI {
				res.Patient = patientFromQuery(r)
			}
			return res
		}
	}
	return Default
}

// patientFromQuery finds a patient reference in common query parameters
// (FHIR search, DICOM QIDO, plain APIs).
func patientFromQuery(r *Request) Secret {
	q := r.Query()
	for _, k := range []string{"patient", "subject", "subject:Patient", "patient.identifier", "PatientID", "00100020", "patient_id", "mrn"} {
		if v := q.Get(k); v != "" {
			return NewSecret(v)
		}
	}
	return Secret{}
}

var reHealth = regexp.MustCompile(`^/(healthz|readyz|livez|health|ping|grpc\.health\.v1\.Health/(Check|Watch))/?$`)
