package identity

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"medmesh/api/wire"
	"medmesh/controlplane/attest"
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
		m := New(Options{Dev: tc.dev, Logger: slog.New(slog.DiscardHandler)})
		if got, _, _ := m.attested(context.Background(), &Claim{Peer: tc.peer, Namespace: "default"}); got != tc.want {
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

// fakeAttestor answers from a table; unknown tokens are unreachable
// (transient) until reachable is closed.
type fakeAttestor struct {
	mu        sync.Mutex
	calls     int
	reachable chan struct{}
	grants    map[string]string // token -> namespace/service
}

func (f *fakeAttestor) Attest(ctx context.Context, token, namespace, service string) error {
	f.mu.Lock()
	f.calls++
	f.mu.Unlock()
	select {
	case <-f.reachable:
	default:
		return errors.New("connection refused")
	}
	if f.grants[token] != namespace+"/"+service {
		return fmt.Errorf("%w: not %s/%s", attest.ErrRefused, namespace, service)
	}
	return nil
}

// Proofs checked by an outside system are pending until it answers,
// retried while it is unreachable, then accepted or refused; a refusal
// never echoes the token, and an unsupported kind of proof is refused.
func TestProofChecks(t *testing.T) {
	f := &fakeAttestor{reachable: make(chan struct{}), grants: map[string]string{"tok-emr": "default/emr"}}
	done := make(chan struct{}, 1)
	wake := func() {
		select {
		case done <- struct{}{}:
		default:
		}
	}
	c := newProofChecks(map[wire.ProofKind]Attestor{wire.ProofKubernetes: f}, slog.New(slog.DiscardHandler), wake)
	ctx := context.Background()
	emr := &Claim{ID: "emr-1", Service: "emr", Namespace: "default", Proof: wire.Proof{Kind: wire.ProofKubernetes, Token: "tok-emr"}}
	thief := &Claim{ID: "his-1", Service: "emr", Namespace: "default", Proof: wire.Proof{Kind: wire.ProofKubernetes, Token: "tok-his"}}
	if pending, err := c.result(ctx, emr); !pending || err != nil {
		t.Fatalf("first ask: pending=%t err=%v, want pending", pending, err)
	}
	c.result(ctx, thief)
	// Unreachable: retried, still pending.
	for {
		f.mu.Lock()
		n := f.calls
		f.mu.Unlock()
		if n >= 3 {
			break
		}
		<-time.After(10 * time.Millisecond)
	}
	if pending, _ := c.result(ctx, emr); !pending {
		t.Fatal("an unreachable attestor produced an answer")
	}
	close(f.reachable)
	waitFor := func(p *Claim) error {
		for {
			pending, err := c.result(ctx, p)
			if !pending {
				return err
			}
			<-done
		}
	}
	if err := waitFor(emr); err != nil {
		t.Fatalf("emr with its own token: %v", err)
	}
	err := waitFor(thief)
	if !errors.Is(err, attest.ErrRefused) || strings.Contains(err.Error(), "tok-his") {
		t.Fatalf("his claiming emr: %v (want a refusal that does not echo the token)", err)
	}
	// A different claim on the same stream is checked afresh.
	other := *emr
	other.Service = "his"
	if pending, _ := c.result(ctx, &other); !pending {
		t.Fatal("a new claim reused the old answer")
	}
	consul := &Claim{ID: "x", Service: "emr", Namespace: "default", Proof: wire.Proof{Kind: wire.ProofConsul, Token: "t"}}
	if pending, err := c.result(ctx, consul); pending || !errors.Is(err, attest.ErrRefused) {
		t.Fatalf("unsupported proof: pending=%t err=%v, want refused", pending, err)
	}
	c.forget(map[string]bool{})
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.checks) != 0 {
		t.Fatalf("%d checks kept for gone proxies", len(c.checks))
	}
}
