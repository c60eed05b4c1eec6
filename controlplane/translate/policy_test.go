package translate_test

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"medmesh/controlplane/ir"
	"medmesh/controlplane/policy"
	"medmesh/registry"
)

// goldenNow is the fixed "now" policies are resolved at in golden cases.
var goldenNow = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// resolvePolicies resolves a case's policy objects against its catalog the
// way the control plane does and returns the accepted ones. Every object
// must be accepted except those a case names "rejected-*" or
// "conflicting-*", which must not be: a golden case then shows both that
// the bad object changed nothing and that the good ones still apply.
func resolvePolicies(t *testing.T, name string, cat *registry.Catalog, docs []json.RawMessage) *ir.Policies {
	t.Helper()
	if len(docs) == 0 {
		return nil
	}
	parts := make([][]byte, len(docs))
	for i, d := range docs {
		parts[i] = d
	}
	set, err := policy.ParseSet(name, bytes.Join(parts, []byte("\n---\n")))
	if err != nil {
		t.Fatal(err)
	}
	res := policy.Resolve(set, policy.Options{Catalog: cat, Defaults: ir.DefaultDefaults(), Now: goldenNow})
	for _, st := range res.Statuses {
		want := !hasAnyPrefix(st.Name, "rejected-", "conflicting-")
		if st.Accepted() != want {
			t.Fatalf("%s: accepted=%t, want %t: %s", st.Key, st.Accepted(), want, st.Message())
		}
	}
	return res.Policies
}

func hasAnyPrefix(s string, prefixes ...string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}
