package controlplane

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"medmesh/api/wire"
	"medmesh/controlplane/ir"
)

// Identities is what the control plane needs from a SPIFFE CA
// (certs.CA provides it).
type Identities interface {
	ServiceID(namespace, service string) (spiffeid.ID, error)
	NewSVID(id spiffeid.ID) (*x509svid.SVID, error)
	Bundle() *x509bundle.Bundle
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
func (cp *ControlPlane) attested(ctx context.Context, p *ir.Proxy, namespace string) (ok, pending bool, refusal error) {
	switch p.Proof.Kind {
	case wire.ProofJoinToken:
		if err := cp.tokens.check(p.Proof.Token, p.ID, p.Service); err != nil {
			return false, false, err
		}
		return true, false, nil
	case "":
	default:
		pending, err := cp.proofs.result(ctx, p, namespace)
		return !pending && err == nil, pending, err
	}
	if !cp.opts.Dev {
		return false, false, nil
	}
	host, _, err := net.SplitHostPort(p.Peer)
	if err != nil {
		return false, false, nil
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback(), false, nil
}

// svidFor returns the proxy's SVID, issuing or renewing it when due.
func (cp *ControlPlane) svidFor(st *loopState, p *ir.Proxy, namespace string) (*ir.Identity, error) {
	now := time.Now()
	gen := cp.renewGen.Load()
	if cur, ok := st.svids[p.ID]; ok && !cur.renewDue(now) && cur.gen >= gen {
		return cur.identity, nil
	}
	id, err := cp.opts.Identities.ServiceID(namespace, p.Service)
	if err != nil {
		return nil, err
	}
	svid, err := cp.opts.Identities.NewSVID(id)
	if err != nil {
		return nil, fmt.Errorf("proxy %q: issuing an SVID: %w", p.ID, err)
	}
	certPEM, keyPEM, err := svid.Marshal()
	if err != nil {
		return nil, fmt.Errorf("proxy %q: encoding its SVID: %w", p.ID, err)
	}
	leaf := svid.Certificates[0]
	sum := sha256.Sum256(leaf.Raw)
	ident := &ir.Identity{CertChain: certPEM, PrivateKey: keyPEM, Fingerprint: hex.EncodeToString(sum[:8]),
		SPIFFEID: id.String()}
	st.svids[p.ID] = &issued{identity: ident, issuedAt: now, notAfter: leaf.NotAfter, gen: gen}
	cp.log.Info("issued SVID", "proxy", p.ID, "spiffeID", id.String(), "notAfter", leaf.NotAfter.UTC().Format(time.RFC3339))
	return ident, nil
}

// handleRenewSVIDs re-issues every proxy's SVID now:
// POST /ca/renew-svids. It completes a root rotation early (rotate, wait
// until every proxy has ACKed the new bundle, then renew, and every SVID
// chains to the new root), and answers a suspected key compromise.
func (cp *ControlPlane) handleRenewSVIDs(w http.ResponseWriter, _ *http.Request) {
	if cp.opts.Identities == nil {
		http.Error(w, "mTLS is off: there are no SVIDs to renew", http.StatusConflict)
		return
	}
	gen := cp.renewGen.Add(1)
	cp.nudge()
	cp.log.Warn("operator asked to renew every SVID now", "generation", gen)
	writeJSON(w, map[string]int64{"generation": gen})
}

// podAgent is an SVID agent attested with a Kubernetes token.
type podAgent struct {
	service, peer string
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
func coLocated(st *loopState, p *ir.Proxy) bool {
	if p.Kind != wire.ProxyEnvoy {
		return false
	}
	a, ok := st.podAgents[p.ID+"/svid"]
	if !ok || a.service != p.Service {
		return false
	}
	host := func(addr string) string {
		h, _, err := net.SplitHostPort(addr)
		if err != nil {
			return ""
		}
		return h
	}
	return host(a.peer) != "" && host(a.peer) == host(p.Peer)
}
