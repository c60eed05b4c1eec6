package classify

import (
	"regexp"
	"slices"
	"strings"
)

// Match is a declarative condition; every field that is set must hold.
type Match struct {
	// Methods, upper case; empty means any.
	Methods []string
	// PathPrefix is matched against the unescaped path without query.
	PathPrefix string
	// PathRegex is matched against the unescaped path without query.
	PathRegex *regexp.Regexp
	// Segments: any path segment equals one of these (case-insensitive).
	Segments []string
	// normSegments are Segments normalised once, at classifier build.
	normSegments []string
	// MediaTypes: the content type (or, for reads, the accept header)
	// is one of these; "type/*" matches a whole type.
	MediaTypes []string
	// Headers must all match.
	Headers []HeaderMatch
}

// HeaderMatch matches one request header.
type HeaderMatch struct {
	Name string // lower case
	// Exact value, or Regex, or (both empty) presence.
	Exact string
	Regex *regexp.Regexp
}

func (m *Match) empty() bool {
	return len(m.Methods) == 0 && m.PathPrefix == "" && m.PathRegex == nil &&
		len(m.Segments) == 0 && len(m.MediaTypes) == 0 && len(m.Headers) == 0
}

func (m *Match) matches(r *Request) bool {
	if len(m.Methods) > 0 && !slices.Contains(m.Methods, r.Method) {
		return false
	}
	if m.PathPrefix != "" && !strings.HasPrefix(r.CleanPath(), m.PathPrefix) {
		return false
	}
	if m.PathRegex != nil && !m.PathRegex.MatchString(r.CleanPath()) {
		return false
	}
	if len(m.Segments) > 0 && !anySegment(r, m.normSegments) {
		return false
	}
	if len(m.MediaTypes) > 0 && !mediaMatches(r, m.MediaTypes) {
		return false
	}
	for _, h := range m.Headers {
		v, ok := r.Header[h.Name]
		switch {
		case !ok:
			return false
		case h.Regex != nil:
			if !h.Regex.MatchString(v) {
				return false
			}
		case h.Exact != "":
			if v != h.Exact {
				return false
			}
		}
	}
	return true
}

// anySegment compares segments with case, '_' and '-' ignored, so
// "cardiac_arrest_alert", "cardiac-arrest-alert" and the gRPC method
// "CardiacArrestAlert" are one event.
func anySegment(r *Request, want []string) bool {
	for _, s := range r.normSegments() {
		for _, w := range want {
			if s == w {
				return true
			}
		}
	}
	return false
}

func normalizeSegment(s string) string {
	plain := true
	for i := 0; i < len(s) && plain; i++ {
		c := s[i]
		plain = c != '_' && c != '-' && (c < 'A' || c > 'Z')
	}
	if plain {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for _, c := range s {
		switch {
		case c == '_' || c == '-':
		case c >= 'A' && c <= 'Z':
			b.WriteRune(c + ('a' - 'A'))
		default:
			b.WriteRune(c)
		}
	}
	return b.String()
}

// mediaMatches checks the content type, and the accept header too: a GET
// has no body, so what it asks for is what it is about.
func mediaMatches(r *Request, want []string) bool {
	cands := []string{r.MediaType()}
	for a := range strings.SplitSeq(r.Header["accept"], ",") {
		if mt := mediaType(a); mt != "" {
			cands = append(cands, mt)
		}
	}
	for _, c := range cands {
		if c == "" {
			continue
		}
		for _, w := range want {
			if c == w || (strings.HasSuffix(w, "/*") && strings.HasPrefix(c, w[:len(w)-1])) {
				return true
			}
		}
	}
	return false
}
