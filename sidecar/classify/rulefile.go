package classify

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Config is an operator rule file: classification rules, evaluated before
// the built-in ones, and the caller policy that caps priorities.
//
//	rules:
//	  - name: stat-pharmacy-orders
//	    match: {methods: [POST], pathPrefix: /pharmacy/stat}
//	    phi: true
//	    class: pharmacy.order
//	    priority: critical
//	callers:
//	  default: high
//	  allow:
//	    - id: spiffe://medmesh.local/ns/default/svc/vitals
//	      max: critical
//	    - prefix: spiffe://medmesh.local/ns/icu/
//	      max: critical
type Config struct {
	Rules   []Rule
	Callers CallerPolicy
}

// CallerPolicy caps the priority a caller's requests may have, by the
// caller's SPIFFE ID. Without a policy every caller may reach critical:
// refusing a cardiac-arrest alert because nobody wrote a policy would be
// the worse failure.
type CallerPolicy struct {
	// Default caps callers no entry names, including callers without an
	// identity.
	Default Priority
	Entries []CallerEntry
}

// CallerEntry is one caller (exact ID) or family of callers (ID prefix).
type CallerEntry struct {
	ID     string
	Prefix string
	Max    Priority
}

// Max returns the most urgent priority the caller may have: the first
// exact match, else the longest matching prefix, else the default.
func (p *CallerPolicy) Max(spiffeID string) Priority {
	best, bestLen := p.Default, -1
	for _, e := range p.Entries {
		if e.ID != "" && e.ID == spiffeID {
			return e.Max
		}
		if e.Prefix != "" && strings.HasPrefix(spiffeID, e.Prefix) && len(e.Prefix) > bestLen {
			best, bestLen = e.Max, len(e.Prefix)
		}
	}
	return best
}

type rawFile struct {
	Rules   []rawRule  `yaml:"rules"`
	Callers rawCallers `yaml:"callers"`
}

type rawRule struct {
	Name     string   `yaml:"name"`
	Match    rawMatch `yaml:"match"`
	PHI      *bool    `yaml:"phi"`
	Class    string   `yaml:"class"`
	Priority string   `yaml:"priority"`
}

type rawMatch struct {
	Methods    []string    `yaml:"methods"`
	PathPrefix string      `yaml:"pathPrefix"`
	PathRegex  string      `yaml:"pathRegex"`
	Segments   []string    `yaml:"segments"`
	MediaTypes []string    `yaml:"mediaTypes"`
	Headers    []rawHeader `yaml:"headers"`
}

type rawHeader struct {
	Name  string `yaml:"name"`
	Exact string `yaml:"exact"`
	Regex string `yaml:"regex"`
}

type rawCallers struct {
	Default string     `yaml:"default"`
	Allow   []rawEntry `yaml:"allow"`
}

type rawEntry struct {
	ID     string `yaml:"id"`
	Prefix string `yaml:"prefix"`
	Max    string `yaml:"max"`
}

// LoadFile reads and validates a rule file. Every error names the file
// and the line, so an operator can fix a bad file; the caller keeps its
// previous rules when this fails.
func LoadFile(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("rules %s: %w", path, err)
	}
	return Parse(path, data)
}

// Parse validates rule file content; name is used in errors.
func Parse(name string, data []byte) (*Config, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true) // a misspelt key is an error, not a silent no-op
	var raw rawFile
	if err := dec.Decode(&raw); err != nil && !errors.Is(err, io.EOF) /* empty file: no rules */ {
		var te *yaml.TypeError
		if errors.As(err, &te) {
			return nil, fmt.Errorf("rules %s: %s", name, strings.Join(te.Errors, "; "))
		}
		return nil, fmt.Errorf("rules %s: %s", name, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	// A second pass over the node tree gives each rule its line number.
	var doc yaml.Node
	_ = yaml.Unmarshal(data, &doc)
	ruleLines, callerLines := lines(&doc, "rules"), lines(&doc, "callers.allow")

	cfg := &Config{Callers: CallerPolicy{Default: Critical}}
	var errs []error
	seen := map[string]int{}
	for i, rr := range raw.Rules {
		line := at(ruleLines, i)
		r, err := rr.compile()
		if err == nil && seen[r.Name] != 0 {
			err = fmt.Errorf("name %q already used by the rule at line %d", r.Name, seen[r.Name])
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("rules %s:%d: rule %d (%q): %w", name, line, i+1, rr.Name, err))
			continue
		}
		seen[r.Name] = line
		r.Source = fmt.Sprintf("%s:%d", name, line)
		cfg.Rules = append(cfg.Rules, r)
	}
	if raw.Callers.Default != "" {
		p, ok := ParsePriority(raw.Callers.Default)
		if !ok {
			errs = append(errs, fmt.Errorf("rules %s:%d: callers.default: unknown priority %q", name, lineOf(&doc, "callers.default"), raw.Callers.Default))
		}
		cfg.Callers.Default = p
	}
	for i, e := range raw.Callers.Allow {
		line := at(callerLines, i)
		p, ok := ParsePriority(e.Max)
		switch {
		case !ok:
			errs = append(errs, fmt.Errorf("rules %s:%d: callers.allow[%d].max: unknown priority %q", name, line, i, e.Max))
		case (e.ID == "") == (e.Prefix == ""):
			errs = append(errs, fmt.Errorf("rules %s:%d: callers.allow[%d]: set exactly one of id and prefix", name, line, i))
		case !strings.HasPrefix(e.ID+e.Prefix, "spiffe://"):
			errs = append(errs, fmt.Errorf("rules %s:%d: callers.allow[%d]: %q is not a SPIFFE ID", name, line, i, e.ID+e.Prefix))
		default:
			cfg.Callers.Entries = append(cfg.Callers.Entries, CallerEntry{ID: e.ID, Prefix: e.Prefix, Max: p})
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return cfg, nil
}

func (rr rawRule) compile() (Rule, error) {
	r := Rule{Name: strings.TrimSpace(rr.Name), Class: strings.TrimSpace(rr.Class)}
	if r.Name == "" {
		return r, errors.New("name: required")
	}
	if r.Class == "" {
		return r, errors.New("class: required")
	}
	if rr.PHI == nil {
		return r, errors.New("phi: required (true or false); PHI is never guessed for operator rules")
	}
	r.PHI = *rr.PHI
	p, ok := ParsePriority(rr.Priority)
	if !ok {
		return r, fmt.Errorf("priority: unknown value %q (want critical, high, medium, low or background)", rr.Priority)
	}
	r.Priority = p
	m := rr.Match
	for _, meth := range m.Methods {
		r.Match.Methods = append(r.Match.Methods, strings.ToUpper(strings.TrimSpace(meth)))
	}
	r.Match.PathPrefix = m.PathPrefix
	if m.PathRegex != "" {
		re, err := regexp.Compile(m.PathRegex)
		if err != nil {
			return r, fmt.Errorf("match.pathRegex: %w", err)
		}
		r.Match.PathRegex = re
	}
	r.Match.Segments = m.Segments
	for _, mt := range m.MediaTypes {
		r.Match.MediaTypes = append(r.Match.MediaTypes, strings.ToLower(strings.TrimSpace(mt)))
	}
	for i, h := range m.Headers {
		hm := HeaderMatch{Name: strings.ToLower(strings.TrimSpace(h.Name)), Exact: h.Exact}
		if hm.Name == "" {
			return r, fmt.Errorf("match.headers[%d].name: required", i)
		}
		if h.Regex != "" {
			re, err := regexp.Compile(h.Regex)
			if err != nil {
				return r, fmt.Errorf("match.headers[%d].regex: %w", i, err)
			}
			hm.Regex = re
		}
		r.Match.Headers = append(r.Match.Headers, hm)
	}
	if r.Match.empty() {
		return r, errors.New("match: at least one condition is required (a catch-all would hide every built-in rule)")
	}
	return r, nil
}

// lines returns the line of each item of the sequence at a dotted path.
func lines(doc *yaml.Node, path string) []int {
	n := find(doc, path)
	if n == nil || n.Kind != yaml.SequenceNode {
		return nil
	}
	out := make([]int, len(n.Content))
	for i, c := range n.Content {
		out[i] = c.Line
	}
	return out
}

func lineOf(doc *yaml.Node, path string) int {
	if n := find(doc, path); n != nil {
		return n.Line
	}
	return 0
}

func find(n *yaml.Node, path string) *yaml.Node {
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	for key := range strings.SplitSeq(path, ".") {
		if n == nil || n.Kind != yaml.MappingNode {
			return nil
		}
		var next *yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == key {
				next = n.Content[i+1]
			}
		}
		n = next
	}
	return n
}

func at(lines []int, i int) int {
	if i < len(lines) {
		return lines[i]
	}
	return 0
}
