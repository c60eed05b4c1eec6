package residency

import (
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"slices"
	"sort"
	"sync"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/types"
)

// DefaultName is the name the embedded default policy goes by in
// reasons and status.
const DefaultName = "default.rego (embedded)"

//go:embed default.rego
var defaultSource []byte

// denyRef is the one document the decision is read from.
var denyRef = ast.MustParseRef("data.medmesh.residency.deny")

// packagePath is what a policy module must declare, so that a module
// with a typo in its package (which would define no deny at all, and so
// allow everything) is refused instead of silently failing open.
var packagePath = ast.MustParseRef("data.medmesh.residency")

// ErrPolicy marks a policy that cannot be used: it does not compile, or
// its deny has a shape that is not a decision.
var ErrPolicy = errors.New("residency policy refused")

// Policy is one compiled residency policy, immutable and safe to use from
// several goroutines.
type Policy struct {
	name     string
	source   string
	digest   string
	prepared rego.PreparedEvalQuery
}

// Name is the file the policy came from (or DefaultName).
func (p *Policy) Name() string { return p.name }

// Digest identifies the policy's name and source text (sha256, 12 hex
// digits): two policies with the same digest decide the same way, with
// the same reasons.
func (p *Policy) Digest() string { return p.digest }

// Source is the Rego text.
func (p *Policy) Source() string { return p.source }

// Default returns the embedded default policy.
func Default() *Policy { return defaultPolicy() }

// defaultPolicy compiles the default once; a Policy is immutable.
var defaultPolicy = sync.OnceValue(func() *Policy {
	p, err := Parse(DefaultName, defaultSource)
	if err != nil {
		panic("residency: the embedded default policy does not compile: " + err.Error())
	}
	return p
})

// Load reads and compiles a policy file. Errors carry OPA's file:line
// message, so a command can refuse to start with it.
func Load(path string) (*Policy, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrPolicy, err)
	}
	return Parse(path, src)
}

// Parse compiles a policy module; name is the file name used in errors
// ("name:line: rego_parse_error: ...") and reasons.
func Parse(name string, src []byte) (*Policy, error) {
	refuse := func(err error) (*Policy, error) { return nil, fmt.Errorf("%w: %w", ErrPolicy, err) }
	mod, err := ast.ParseModuleWithOpts(name, string(src), ast.ParserOptions{RegoVersion: ast.RegoV1})
	if err != nil {
		return refuse(err)
	}
	if !mod.Package.Path.Equal(packagePath) {
		return refuse(fmt.Errorf("%s:%d: package %s; want package medmesh.residency",
			name, mod.Package.Location.Row, mod.Package.Path[1:]))
	}
	c := ast.NewCompiler().WithDefaultRegoVersion(ast.RegoV1).WithCapabilities(capabilities())
	if c.Compile(map[string]*ast.Module{name: mod}); c.Failed() {
		return refuse(c.Errors)
	}
	if err := checkDenyType(name, c); err != nil {
		return refuse(err)
	}
	r := rego.New(
		rego.Query(denyRef.String()),
		rego.Compiler(c),
		// Without this a failing builtin (to_number("x"), a bad regex)
		// makes its expression undefined, deny undefined, and the flow
		// allowed: fail open. As errors they fail closed.
		rego.StrictBuiltinErrors(true),
		// The raw OPA value tells a set from an array, which the JSON
		// conversion would blur, and costs no conversion.
		rego.GenerateJSON(func(t *ast.Term, _ *rego.EvalContext) (any, error) { return t.Value, nil }),
	)
	pq, err := r.PrepareForEval(context.Background())
	if err != nil {
		return refuse(err)
	}
	h := sha256.New()
	h.Write([]byte(name))
	h.Write([]byte{0})
	h.Write(src)
	return &Policy{name: name, source: string(src), digest: hex.EncodeToString(h.Sum(nil)[:6]), prepared: pq}, nil
}

// capabilities are OPA's builtins minus the nondeterministic ones
// (http.send, time.now_ns, rand.intn, net.lookup_ip_addr, ...): decisions
// are memoized per input, which is only right when the input alone
// decides, and a control plane round must not wait on the network. A
// policy calling one is refused with "undefined function" at its line.
var capabilities = sync.OnceValue(func() *ast.Capabilities {
	caps := ast.CapabilitiesForThisVersion()
	caps.Builtins = slices.DeleteFunc(caps.Builtins, (*ast.Builtin).IsNondeterministic)
	return caps
})

// checkDenyType refuses a module without a deny rule (it would allow
// every flow, most likely by mistake) or whose deny the type checker
// knows is neither a boolean nor a set. Types it cannot know (e.g. deny
// := input.x) are checked per evaluation instead.
func checkDenyType(name string, c *ast.Compiler) error {
	rules := c.GetRulesExact(denyRef)
	if len(rules) == 0 {
		return fmt.Errorf("%s: no deny rule in package medmesh.residency; write `deny if false` to allow every flow on purpose", name)
	}
	t := c.TypeEnv.GetByRef(denyRef)
	if maybeDecision(t) {
		return nil
	}
	sort.Slice(rules, func(i, j int) bool { return rules[i].Location.Row < rules[j].Location.Row })
	return fmt.Errorf("%s:%d: deny is %s; want true (deny if {...}) or a set of reasons (deny contains msg if {...})",
		name, rules[0].Location.Row, types.Sprint(t))
}

func maybeDecision(t types.Type) bool {
	switch t := t.(type) {
	case nil, types.Boolean, *types.Set:
		return true
	case *types.NamedType:
		return maybeDecision(t.Type)
	case types.Any:
		if len(t) == 0 {
			return true
		}
		for _, u := range t {
			if maybeDecision(u) {
				return true
			}
		}
	}
	return false
}

// decide evaluates one input. It never panics and fails closed: an
// error, a panic inside OPA or a deny of the wrong shape denies the flow
// with the problem as the reason, and is also returned for counting.
func (p *Policy) decide(ctx context.Context, in ast.Value) (d Decision, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%s: evaluation panicked: %v", p.name, r)
		}
		if err != nil {
			d = Decision{Reasons: []string{"residency policy error, flow denied: " + err.Error()}}
		}
	}()
	rs, err := p.prepared.Eval(ctx, rego.EvalParsedInput(in))
	if err != nil {
		return Decision{}, err
	}
	if len(rs) == 0 || len(rs[0].Expressions) == 0 {
		return Decision{Allowed: true}, nil // deny is undefined
	}
	switch v := rs[0].Expressions[0].Value.(type) {
	case ast.Boolean:
		if !v {
			return Decision{Allowed: true}, nil
		}
		return Decision{Reasons: []string{"denied by residency policy " + p.name}}, nil
	case ast.Set:
		if v.Len() == 0 {
			return Decision{Allowed: true}, nil
		}
		sorted := v.Sorted()
		reasons := make([]string, 0, sorted.Len())
		for i := range sorted.Len() {
			t := sorted.Elem(i)
			if s, ok := t.Value.(ast.String); ok {
				reasons = append(reasons, string(s))
			} else {
				reasons = append(reasons, t.String())
			}
		}
		return Decision{Reasons: reasons}, nil
	case ast.Value:
		return Decision{}, fmt.Errorf("%s: deny is %s %s; want true or a set of reasons", p.name, ast.ValueName(v), v)
	default:
		return Decision{}, fmt.Errorf("%s: deny is a %T; want true or a set of reasons", p.name, v)
	}
}
