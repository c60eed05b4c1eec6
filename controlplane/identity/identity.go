// Package identity decides which SPIFFE identity each connected proxy
// holds: it checks proofs of identity (one-time join tokens it issues
// itself, Kubernetes service-account tokens, Consul ACL tokens, loopback
// in development mode), issues X.509-SVIDs from the CA and renews them at
// half-life, and remembers per proxy what it decided, for status pages.
//
// The control loop is its only caller for per-proxy decisions (Identify,
// Forget); join tokens, renew-all requests and status reads are safe from
// the admin handlers' goroutines.
package identity

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"medmesh/api/wire"
	"medmesh/controlplane/ir"
)

// CA is what identities are issued from (certs.CA provides it).
type CA interface {
	ServiceID(namespace, service string) (spiffeid.ID, error)
	NewSVID(id spiffeid.ID) (*x509svid.SVID, error)
	Bundle() *x509bundle.Bundle
}

// Options configure a Manager.
type Options struct {
	// CA issues SVIDs; nil: mTLS is off and Identify is never called.
	CA CA
	// Attestors check the proofs proxies present, by kind. Join tokens
	// are the Manager's own and always accepted.
	Attestors map[wire.ProofKind]Attestor
	// Dev trusts proxies on loopback without proof of identity.
	Dev    bool
	Logger *slog.Logger
	// Wake tells the control loop that something changed outside it (a
	// proof check finished, an operator asked to renew every SVID).
	Wake func()
}

// Claim is a connected proxy asking for its service's identity.
type Claim struct {
	ID        string
	Service   string
	Namespace string // the service's namespace in the mesh
	Kind      wire.ProxyKind
	// Peer is where its xDS stream comes from.
	Peer string
	// Proof is what it presented on its stream; never logged.
	Proof wire.Proof
}

// Manager holds every connected proxy's identity state.
type Manager struct {
	opts   Options
	log    *slog.Logger
	tokens *joinTokens
	proofs *proofChecks
	// renewGen counts operator requests to renew every SVID now.
	renewGen atomic.Int64
	// issuedTotal counts SVIDs issued (metrics.go).
	issuedTotal atomic.Int64

	// proxies is owned by the control loop (Identify, Forget,
	// RenewalsDue); statuses is its copy for readers.
	proxies map[string]*proxyState

	mu sync.RWMutex
	// statuses is what readers see: /ui and /debug (Details, Statuses)
	// and /metrics (metrics.go: a proxy holds an SVID while its Detail
	// has a lifetime).
	statuses map[string]Detail
}

// Detail is one proxy's identity as status pages show it.
type Detail struct {
	// Status is the SPIFFE ID the proxy holds, or why it has none.
	Status string
	// IssuedAt and NotAfter bound the SVID it holds; zero without one.
	IssuedAt, NotAfter time.Time
}

// proxyState is everything known about one proxy's identity, so that a
// departing proxy is forgotten with one delete.
type proxyState struct {
	svid *issued
	// warned: why it has no SVID was logged once already.
	warned bool
	// status says which SPIFFE ID it holds, or why none.
	status string
	// podAgent is set for an SVID agent attested by a Kubernetes
	// service-account token: it vouches for the Envoy of its pod.
	podAgent *podAgent
}

// issued is an SVID handed to one Envoy proxy.
type issued struct {
	identity *ir.Identity
	issuedAt time.Time
	notAfter time.Time
	// gen is the renew-all generation it was issued in: an operator's
	// POST /ca/renew-svids makes every older SVID due.
	gen int64
}

// podAgent is an SVID agent attested with a Kubernetes token.
type podAgent struct {
	service, peer string
}

// New returns a Manager.
func New(o Options) *Manager {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Wake == nil {
		o.Wake = func() {}
	}
	return &Manager{opts: o, log: o.Logger, tokens: newJoinTokens(), proofs: newProofChecks(o.Attestors, o.Logger, o.Wake),
		proxies: map[string]*proxyState{}, statuses: map[string]Detail{}}
}

// Identify returns the SVID a proxy holds, issuing or renewing it when
// due, or nil when the proxy has not (yet) proved its identity; it logs
// once why an unattested proxy gets none. An error means an SVID could not
// be issued.
func (m *Manager) Identify(ctx context.Context, c Claim) (*ir.Identity, error) {
	ps := m.proxies[c.ID]
	if ps == nil {
		ps = &proxyState{}
		m.proxies[c.ID] = ps
	}
	ok, pending, refusal := m.attested(ctx, &c)
	if !ok && !pending && refusal == nil {
		ok = m.coLocated(&c)
	}
	// Pending or refused, it is handed no SVID this round, whatever it
	// was issued before: its status below carries no lifetime.
	switch {
	case pending:
		m.setStatus(c.ID, ps, "checking "+string(c.Proof.Kind)+" proof")
		return nil, nil
	case !ok:
		status := "none: no proof of identity"
		if refusal != nil {
			status = "refused: " + refusal.Error()
		}
		m.setStatus(c.ID, ps, status)
		if !ps.warned {
			ps.warned = true
			if refusal != nil {
				// A claim on someone else's identity, or a stale token:
				// refused and logged (the token itself never is).
				m.log.Warn("SVID request refused", "proxy", c.ID, "service", c.Service, "peer", c.Peer,
					"proof", string(c.Proof.Kind), "reason", refusal.Error())
			} else {
				m.log.Warn("no SVID for proxy: its identity is not proven; its mTLS listeners and clusters stay closed",
					"proxy", c.ID, "peer", c.Peer)
			}
		}
		return nil, nil
	}
	ident, err := m.svidFor(ps, &c)
	if err != nil {
		return nil, err
	}
	m.setStatus(c.ID, ps, ident.SPIFFEID)
	if c.Kind == wire.ProxySVIDAgent && c.Proof.Kind == wire.ProofKubernetes {
		ps.podAgent = &podAgent{service: c.Service, peer: c.Peer}
	}
	return ident, nil
}

// setStatus records what readers see of a proxy's identity: its status
// and, when it holds one, its SVID's lifetime (which a renewal changes
// under the same SPIFFE ID).
func (m *Manager) setStatus(id string, ps *proxyState, status string) {
	d := Detail{Status: status}
	if ps.svid != nil && status == ps.svid.identity.SPIFFEID {
		d.IssuedAt, d.NotAfter = ps.svid.issuedAt, ps.svid.notAfter
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if ps.status == status && m.statuses[id] == d {
		return
	}
	ps.status = status
	m.statuses[id] = d
}

// Forget drops everything about proxies that are no longer connected: a
// reconnecting workload proves itself again.
func (m *Manager) Forget(live map[string]bool) {
	m.mu.Lock()
	for id := range m.proxies {
		if !live[id] {
			delete(m.proxies, id)
			delete(m.statuses, id)
		}
	}
	m.mu.Unlock()
	m.proofs.forget(live)
}

// Statuses returns, per proxy, the SPIFFE ID it holds or why it has none.
func (m *Manager) Statuses() map[string]string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make(map[string]string, len(m.statuses))
	for id, d := range m.statuses {
		out[id] = d.Status
	}
	return out
}

// Details returns, per proxy, its identity with its SVID's lifetime.
func (m *Manager) Details() map[string]Detail {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return maps.Clone(m.statuses)
}

// RenewalsDue reports whether an issued SVID is past half its lifetime.
// (A renew-all request wakes the loop itself.)
func (m *Manager) RenewalsDue(now time.Time) bool {
	for _, ps := range m.proxies {
		if ps.svid != nil && ps.svid.renewDue(now) {
			return true
		}
	}
	return false
}

// RenewAll makes every SVID due now: it completes a root rotation early
// (rotate, wait until every proxy has ACKed the new bundle, then renew,
// and every SVID chains to the new root) and answers a suspected key
// compromise. It returns the new renew-all generation.
func (m *Manager) RenewAll() int64 {
	gen := m.renewGen.Add(1)
	m.opts.Wake()
	m.log.Warn("operator asked to renew every SVID now", "generation", gen)
	return gen
}

// BundlePEM is the CA's trust bundle as PEM; empty without a CA.
func (m *Manager) BundlePEM() (string, error) {
	if m.opts.CA == nil {
		return "", nil
	}
	b, err := m.opts.CA.Bundle().Marshal()
	return string(b), err
}

// rotator is a CA whose root medmesh may replace (certs.CA with its own
// root, not the hospital PKI's).
type rotator interface {
	RotateRoot(overlap time.Duration) error
}

// CanRotate reports whether RotateRoot can work.
func (m *Manager) CanRotate() bool {
	_, ok := m.opts.CA.(rotator)
	return ok
}

// RotateRoot replaces the CA's root, keeping the old one trusted for
// overlap, when the CA is medmesh's own.
func (m *Manager) RotateRoot(overlap time.Duration) error {
	rot, ok := m.opts.CA.(rotator)
	if !ok {
		return ErrNoRotation
	}
	return rot.RotateRoot(overlap)
}

// ErrNoRotation: there is no CA that medmesh can rotate.
var ErrNoRotation = errors.New("no CA that medmesh can rotate (mTLS off, or the CA belongs to the hospital PKI)")

// IssueJoinToken creates a one-time token for a service, valid for ttl
// until first used.
func (m *Manager) IssueJoinToken(namespace, service string, ttl time.Duration) (string, error) {
	return m.tokens.issue(namespace, service, ttl)
}

// renewDue is true past half of the SVID's lifetime, so a proxy always has
// half a lifetime of margin if the control plane is briefly unavailable.
// The lifetime counts from issue, not from NotBefore, which is backdated
// for clock skew.
func (s *issued) renewDue(now time.Time) bool {
	return now.After(s.issuedAt.Add(s.notAfter.Sub(s.issuedAt) / 2))
}

// attested reports whether a proxy has proved it may hold its service's
// identity: a join token issued for that service (bound to the first node
// that uses it), a Kubernetes service-account token or a Consul ACL token
// (checked in the background: pending until the answer comes), or, in
// development mode only, a loopback connection. Without proof a proxy
// gets no SVID, and its mTLS listeners and clusters stay unusable rather
// than falling back to plaintext.
func (m *Manager) attested(ctx context.Context, c *Claim) (ok, pending bool, refusal error) {
	switch c.Proof.Kind {
	case wire.ProofJoinToken:
		if err := m.tokens.check(c.Proof.Token, c.ID, c.Service); err != nil {
			return false, false, err
		}
		return true, false, nil
	case "":
	default:
		pending, err := m.proofs.result(ctx, c)
		return !pending && err == nil, pending, err
	}
	if !m.opts.Dev {
		return false, false, nil
	}
	host, _, err := net.SplitHostPort(c.Peer)
	if err != nil {
		return false, false, nil
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback(), false, nil
}

// svidFor returns the proxy's SVID, issuing or renewing it when due.
func (m *Manager) svidFor(ps *proxyState, c *Claim) (*ir.Identity, error) {
	now := time.Now()
	gen := m.renewGen.Load()
	if cur := ps.svid; cur != nil && !cur.renewDue(now) && cur.gen >= gen {
		return cur.identity, nil
	}
	id, err := m.opts.CA.ServiceID(c.Namespace, c.Service)
	if err != nil {
		return nil, err
	}
	svid, err := m.opts.CA.NewSVID(id)
	if err != nil {
		return nil, fmt.Errorf("proxy %q: issuing an SVID: %w", c.ID, err)
	}
	certPEM, keyPEM, err := svid.Marshal()
	if err != nil {
		return nil, fmt.Errorf("proxy %q: encoding its SVID: %w", c.ID, err)
	}
	leaf := svid.Certificates[0]
	sum := sha256.Sum256(leaf.Raw)
	ident := &ir.Identity{CertChain: certPEM, PrivateKey: keyPEM, Fingerprint: hex.EncodeToString(sum[:8]),
		SPIFFEID: id.String()}
	ps.svid = &issued{identity: ident, issuedAt: now, notAfter: leaf.NotAfter, gen: gen}
	m.issuedTotal.Add(1)
	m.log.Info("issued SVID", "proxy", c.ID, "spiffeID", id.String(), "notAfter", leaf.NotAfter.UTC().Format(time.RFC3339))
	return ident, nil
}

// coLocated reports whether an Envoy without proof of its own is vouched
// for by the SVID agent of its pod: `medmesh sidecar` (node "<id>/svid")
// proved the pod's identity with its projected service-account token, and
// the Envoy (node "<id>") claims the same service from the same IP. In
// Kubernetes a pod's IP belongs to that pod's network namespace alone,
// which is the boundary the service-account token already trusts; the
// injected Envoy cannot present that token itself, because its bootstrap
// metadata is fixed at start and projected tokens expire. Only agents
// attested by Kubernetes vouch: on a shared host, an IP proves nothing.
// The control loop identifies SVID agents first in each round, so an
// agent is known before the Envoy it vouches for.
func (m *Manager) coLocated(c *Claim) bool {
	if c.Kind != wire.ProxyEnvoy {
		return false
	}
	agent, ok := m.proxies[c.ID+"/svid"]
	if !ok || agent.podAgent == nil || agent.podAgent.service != c.Service {
		return false
	}
	host := func(addr string) string {
		h, _, err := net.SplitHostPort(addr)
		if err != nil {
			return ""
		}
		return h
	}
	return host(agent.podAgent.peer) != "" && host(agent.podAgent.peer) == host(c.Peer)
}
