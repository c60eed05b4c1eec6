package controlplane

import (
	"strings"
	"testing"
	"time"

	"medmesh/controlplane/ir"
)

// Renewal is due at half the lifetime counted from issue; the backdated
// NotBefore (clock skew) must not make a short-lived SVID look half spent.
func TestRenewDueAtHalfLife(t *testing.T) {
	t0 := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	s := &issued{issuedAt: t0, notAfter: t0.Add(4 * time.Second)}
	if s.renewDue(t0.Add(1900 * time.Millisecond)) {
		t.Fatal("due before half-life")
	}
	if !s.renewDue(t0.Add(2100 * time.Millisecond)) {
		t.Fatal("not due after half-life")
	}
}

func TestAttestedOnlyOnLoopbackInDevMode(t *testing.T) {
	for _, tc := range []struct {
		dev  bool
		peer string
		want bool
	}{
		{true, "127.0.0.1:5000", true},
		{true, "[::1]:5000", true},
		{true, "10.0.0.7:5000", false},
		{true, "", false},
		{false, "127.0.0.1:5000", false},
	} {
		cp := &ControlPlane{opts: Options{Dev: tc.dev}, tokens: newJoinTokens()}
		if got, _ := cp.attested(&ir.Proxy{Peer: tc.peer}); got != tc.want {
			t.Errorf("dev=%t peer=%q: attested=%t, want %t", tc.dev, tc.peer, got, tc.want)
		}
	}
}

// A join token binds the first node of its service that presents it; it
// proves nothing for another node or another service, and expires unused.
func TestJoinTokens(t *testing.T) {
	j := newJoinTokens()
	now := time.Now()
	j.now = func() time.Time { return now }
	tok, err := j.issue("default", "emr", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := j.check(tok, "emr-1", "his"); err == nil {
		t.Fatal("a token for emr proved his")
	}
	if err := j.check(tok, "emr-1", "emr"); err != nil {
		t.Fatal(err)
	}
	if err := j.check(tok, "emr-1", "emr"); err != nil {
		t.Fatalf("the bound node reconnecting: %v", err)
	}
	if err := j.check(tok, "emr-2", "emr"); err == nil {
		t.Fatal("a used token proved a second node")
	}
	stale, _ := j.issue("default", "emr", time.Minute)
	now = now.Add(2 * time.Minute)
	if err := j.check(stale, "emr-3", "emr"); err == nil {
		t.Fatal("an expired token was accepted")
	}
	if err := j.check("not-a-token", "emr-4", "emr"); err == nil || strings.Contains(err.Error(), "not-a-token") {
		t.Fatalf("unknown token: %v (the token must not be echoed)", err)
	}
}
