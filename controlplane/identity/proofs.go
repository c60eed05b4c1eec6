package identity

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"log/slog"
	"sync"
	"time"

	"medmesh/api/wire"
	"medmesh/controlplane/attest"
	"medmesh/internal/backoff"
)

// Attestor checks a proof of identity against the system that vouches for
// it (attest.Kubernetes, attest.Consul): may the holder of token act as
// service in namespace? A definitive "no" wraps attest.ErrRefused; other
// errors are transient and retried.
type Attestor interface {
	Attest(ctx context.Context, token, namespace, service string) error
}

// proofChecks runs attestations off the loop: a TokenReview or a Consul
// ACL check is a network call, and the loop must never wait on one (a
// slow API server would stall every proxy's configuration). The loop asks
// for a result; the first ask starts the check, later asks read it, and a
// finished check signals the loop to reconcile again.
//
// A result belongs to one proxy and one proof: it holds while the proxy's
// stream lives (renewals reuse it) and is dropped when the proxy goes, so
// a reconnecting workload proves itself again.
type proofChecks struct {
	attestors map[wire.ProofKind]Attestor
	log       *slog.Logger
	wake      func() // tells the loop a check finished

	mu     sync.Mutex
	checks map[string]*proofCheck // by proxy ID
}

type proofCheck struct {
	key     string // what was checked: kind, token hash, namespace, service
	pending bool
	err     error // nil once accepted; wraps attest.ErrRefused when refused
	cancel  context.CancelFunc
}

// attestTimeout bounds one call to the vouching system.
const attestTimeout = 10 * time.Second

func newProofChecks(attestors map[wire.ProofKind]Attestor, log *slog.Logger, wake func()) *proofChecks {
	return &proofChecks{attestors: attestors, log: log, wake: wake, checks: map[string]*proofCheck{}}
}

// result reports the proxy's attestation: accepted, refused (err wraps
// attest.ErrRefused) or still pending. The first call for a proof starts
// its check in the background.
func (c *proofChecks) result(ctx context.Context, p *Claim) (pending bool, err error) {
	namespace := p.Namespace
	a, ok := c.attestors[p.Proof.Kind]
	if !ok {
		return false, errNoAttestor(p.Proof.Kind)
	}
	sum := sha256.Sum256([]byte(p.Proof.Token))
	key := string(p.Proof.Kind) + "|" + hex.EncodeToString(sum[:]) + "|" + namespace + "|" + p.Service
	c.mu.Lock()
	defer c.mu.Unlock()
	if cur, ok := c.checks[p.ID]; ok {
		if cur.key == key {
			return cur.pending, cur.err
		}
		cur.cancel() // the proxy now claims something else: check that
	}
	cctx, cancel := context.WithCancel(ctx)
	chk := &proofCheck{key: key, pending: true, cancel: cancel}
	c.checks[p.ID] = chk
	go c.run(cctx, a, chk, p.ID, p.Proof, namespace, p.Service)
	return true, nil
}

// run checks a proof, retrying transient failures until it gets an answer
// or the proxy goes away.
func (c *proofChecks) run(ctx context.Context, a Attestor, chk *proofCheck, proxy string, proof wire.Proof, namespace, service string) {
	bo := backoff.Backoff{Min: 500 * time.Millisecond, Max: 30 * time.Second}
	for {
		actx, cancel := context.WithTimeout(ctx, attestTimeout)
		err := a.Attest(actx, proof.Token, namespace, service)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err == nil || errors.Is(err, attest.ErrRefused) {
			c.mu.Lock()
			chk.pending, chk.err = false, err
			c.mu.Unlock()
			c.wake()
			return
		}
		// The vouching system is unreachable: no SVID yet, and no
		// refusal either; the workload keeps waiting, as it would for
		// the control plane itself.
		c.log.Warn("cannot check a proof of identity yet; retrying", "proxy", proxy, "proof", string(proof.Kind), "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(bo.Next()):
		}
	}
}

// forget drops the checks of proxies that are no longer connected.
func (c *proofChecks) forget(live map[string]bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, chk := range c.checks {
		if !live[id] {
			chk.cancel()
			delete(c.checks, id)
		}
	}
}

type errNoAttestor wire.ProofKind

func (e errNoAttestor) Error() string {
	return "this control plane does not accept " + string(e) + " proofs of identity (see `medmesh controlplane -h`)"
}

// Unwrap makes an unsupported kind of proof a refusal.
func (e errNoAttestor) Unwrap() error { return attest.ErrRefused }
