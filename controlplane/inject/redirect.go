package inject

import (
	"fmt"
	"strings"

	"medmesh/api/wire"
)

// XDSPort is the control plane's xDS port; outbound connections to it
// are never redirected, whoever makes them.
const XDSPort = wire.XDSPort

// Redirect is the traffic redirection medmesh-init installs in the pod's
// network namespace (nat table), in the manner of Istio's istio-init:
//
//	inbound (PREROUTING), TCP:
//	  to HealthPort 15091 (kubelet probes the sidecar)  -> untouched
//	  to Envoy's own InboundPort 15006                  -> untouched
//	  anything else                                     -> REDIRECT to 15006 (Envoy inbound)
//	outbound (OUTPUT), TCP:
//	  from UID 1337 (Envoy, medmesh sidecar)            -> untouched (no loop)
//	  to 127.0.0.1/32 (app <-> Envoy, ext_proc, admin)  -> untouched
//	  to XDSPort 15010 (control plane)                  -> untouched
//	  anything else                                     -> REDIRECT to 15001 (Envoy outbound)
//
// UDP is left alone (DNS keeps working). Envoy's admin (15901) and the
// ext_proc server (15090) bind loopback only, so inbound rules need not
// name them. The script is idempotent: it flushes its own chains first,
// so a restarted init container does not stack duplicate rules.
type Redirect struct {
	InboundPort, OutboundPort, ProxyUID int
	// ExcludeInbound and ExcludeOutbound are ports never redirected.
	ExcludeInbound, ExcludeOutbound []int
}

// DefaultRedirect is what every injected pod gets.
func DefaultRedirect() Redirect {
	return Redirect{InboundPort: InboundPort, OutboundPort: OutboundPort, ProxyUID: ProxyUID,
		ExcludeInbound: []int{HealthPort, InboundPort}, ExcludeOutbound: []int{XDSPort}}
}

// Rules returns the iptables commands, one per line, in order.
func (r Redirect) Rules() []string {
	var out []string
	add := func(format string, a ...any) { out = append(out, fmt.Sprintf("iptables -t nat "+format, a...)) }
	for _, ch := range []string{"MEDMESH_INBOUND", "MEDMESH_IN_REDIRECT", "MEDMESH_OUTPUT", "MEDMESH_REDIRECT"} {
		// -N fails if the chain exists (a restarted init container); -F
		// then empties it, so the rules below are the only ones.
		out = append(out, fmt.Sprintf("iptables -t nat -N %s 2>/dev/null || iptables -t nat -F %s", ch, ch))
	}
	add("-A MEDMESH_IN_REDIRECT -p tcp -j REDIRECT --to-ports %d", r.InboundPort)
	for _, p := range r.ExcludeInbound {
		add("-A MEDMESH_INBOUND -p tcp --dport %d -j RETURN", p)
	}
	add("-A MEDMESH_INBOUND -p tcp -j MEDMESH_IN_REDIRECT")
	add("-A MEDMESH_REDIRECT -p tcp -j REDIRECT --to-ports %d", r.OutboundPort)
	add("-A MEDMESH_OUTPUT -m owner --uid-owner %d -j RETURN", r.ProxyUID)
	add("-A MEDMESH_OUTPUT -d 127.0.0.1/32 -j RETURN")
	for _, p := range r.ExcludeOutbound {
		add("-A MEDMESH_OUTPUT -p tcp --dport %d -j RETURN", p)
	}
	add("-A MEDMESH_OUTPUT -p tcp -j MEDMESH_REDIRECT")
	// Jumps from the built-in chains last, once ours are complete, and
	// only if absent (-C), so re-running adds no second jump.
	out = append(out,
		"iptables -t nat -C PREROUTING -p tcp -j MEDMESH_INBOUND 2>/dev/null || iptables -t nat -A PREROUTING -p tcp -j MEDMESH_INBOUND",
		"iptables -t nat -C OUTPUT -p tcp -j MEDMESH_OUTPUT 2>/dev/null || iptables -t nat -A OUTPUT -p tcp -j MEDMESH_OUTPUT")
	return out
}

// RedirectScript is the default rules as a shell script for `sh -ec`.
func RedirectScript() string {
	return strings.Join(DefaultRedirect().Rules(), "\n") + "\n"
}
