package controlplane

import (
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
		cp := &ControlPlane{opts: Options{Dev: tc.dev}}
		if got := cp.attested(&ir.Proxy{Peer: tc.peer}); got != tc.want {
			t.Errorf("dev=%t peer=%q: attested=%t, want %t", tc.dev, tc.peer, got, tc.want)
		}
	}
}
