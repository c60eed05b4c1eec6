// Package residency decides, per flow, whether a service at this site may
// call a service (possibly at another site), by evaluating a Rego policy
// with an embedded OPA. It is how "patient data does not leave its site"
// becomes a rule the control plane can enforce rather than a locality
// preference.
//
// A flow is one service at this site calling one service. The policy sees
// it as the input document
//
//	{
//	  "action": "data_transfer",      // "call" when the destination is not PHI
//	  "source":      {"service": "vitals", "namespace": "default", "site": "site-a"},
//	  "destination": {"service": "emr", "namespace": "default", "site": "hub",
//	                  "phi": true, "kind": "emr"}
//	}
//
// action is "data_transfer" exactly when destination.phi is true: calls to
// a PHI service carry patient data.
//
// The policy is one Rego module (rego.v1 syntax, OPA v1's default) in
// package medmesh.residency. The decision is data.medmesh.residency.deny:
//
//   - undefined, false or an empty set: the flow is allowed;
//   - true (written `deny if { ... }`): the flow is denied;
//   - a non-empty set (written `deny contains msg if { ... }`): the flow
//     is denied, and the set's members are the reasons shown to operators.
//
// Any other value (a number, a string, an object, an array) is an error
// naming the policy file: refused when the policy is loaded if the Rego
// type checker can tell, otherwise the flow is denied with the error as
// its reason. Every evaluation error fails closed: the flow is denied.
//
// A policy may not call OPA's nondeterministic builtins (http.send,
// time.now_ns, ...): decisions are memoized per input (Decider), which is
// right only if the input alone decides.
//
// With no policy file, Default is in force: PHI services never leave
// their site; non-PHI services may be called across sites; flows within
// one site are always allowed. docs/residency.md has examples.
//
// Everything here is pure (Parse, Decider) except the File source, which
// polls a policy file.
package residency

import (
	"github.com/open-policy-agent/opa/v1/ast"
)

// Actions of a flow (the input document's "action").
const (
	// ActionDataTransfer is a call to a PHI service: it carries patient data.
	ActionDataTransfer = "data_transfer"
	// ActionCall is a call to a service that holds no PHI.
	ActionCall = "call"
)

// Source is the calling service: at this site, or at a peered site when
// a callee here decides whether to admit it ("" Service: any service).
type Source struct {
	Service   string
	Namespace string
	Site      string
}

// Destination is the called service, at this site or another one.
type Destination struct {
	Service   string
	Namespace string
	Site      string
	PHI       bool
	// Kind is the clinical kind (emr, his, imaging, vitals, webrtc,
	// generic), so a policy can treat e.g. imaging studies differently.
	Kind string
}

// Flow is one service calling one service. It is comparable: the input
// document is a function of the Flow alone, so the Flow itself is the
// Decider's memo key (no JSON encoding per lookup).
type Flow struct {
	Source      Source
	Destination Destination
}

// Action is the flow's input "action": data_transfer for a PHI
// destination, call otherwise.
func (f Flow) Action() string {
	if f.Destination.PHI {
		return ActionDataTransfer
	}
	return ActionCall
}

// Input is the input document the policy sees, as JSON-ready values (for
// logs, /debug pages and `opa eval` reproductions).
func (f Flow) Input() map[string]any {
	return map[string]any{
		"action": f.Action(),
		"source": map[string]any{
			"service": f.Source.Service, "namespace": f.Source.Namespace, "site": f.Source.Site,
		},
		"destination": map[string]any{
			"service": f.Destination.Service, "namespace": f.Destination.Namespace, "site": f.Destination.Site,
			"phi": f.Destination.PHI, "kind": f.Destination.Kind,
		},
	}
}

// astInput is Input built directly as an OPA value: evaluation then
// skips converting Go maps through reflection for every flow. src is
// f.Source's term (sourceTerm), which the Decider builds once per caller:
// OPA never modifies its input, so flows of one caller share it.
func (f Flow) astInput(src *ast.Term) ast.Value {
	d := f.Destination
	return ast.NewObject(
		ast.Item(ast.InternedTerm("action"), ast.InternedTerm(f.Action())),
		ast.Item(ast.InternedTerm("source"), src),
		ast.Item(ast.InternedTerm("destination"), ast.ObjectTerm(
			ast.Item(ast.InternedTerm("service"), ast.StringTerm(d.Service)),
			ast.Item(ast.InternedTerm("namespace"), ast.StringTerm(d.Namespace)),
			ast.Item(ast.InternedTerm("site"), ast.StringTerm(d.Site)),
			ast.Item(ast.InternedTerm("phi"), ast.InternedTerm(d.PHI)),
			ast.Item(ast.InternedTerm("kind"), ast.StringTerm(d.Kind)),
		)),
	)
}

func (s Source) term() *ast.Term {
	return ast.ObjectTerm(
		ast.Item(ast.InternedTerm("service"), ast.StringTerm(s.Service)),
		ast.Item(ast.InternedTerm("namespace"), ast.StringTerm(s.Namespace)),
		ast.Item(ast.InternedTerm("site"), ast.StringTerm(s.Site)),
	)
}

// Decision is the policy's verdict on one flow.
type Decision struct {
	Allowed bool
	// Reasons say why a flow is denied: the deny set's members, a line
	// naming the policy for a plain `deny if`, or the evaluation error
	// when the policy failed (fail closed). Empty when allowed.
	Reasons []string
}
