package xds

import (
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"medmesh/api/wire"
)

// ServerListenerProblems says, for one connected proxy, which inbound
// listeners it asked for and was not given, and why, one line each naming
// the node and the address it listens on. A gRPC server that gets no
// listener stays in not-serving mode and resets every connection, which
// its callers see only as "connection reset by peer": this line is where
// an operator learns the cause. Nothing is said before the proxy's first
// publish, when every request is still unanswered.
func (s *Server) ServerListenerProblems(ps ProxyStatus) []string {
	if len(ps.ServerListeners) == 0 {
		return nil
	}
	s.mu.Lock()
	pb, ok := s.published[ps.ID]
	var own map[string]bool
	var as publishedAs
	if ok {
		as = pb.as
		own = make(map[string]bool)
		for name := range pb.snapshot.layers[resource.ListenerType].own {
			own[name] = true
		}
	}
	s.mu.Unlock()
	if !ok {
		return nil
	}
	var out []string
	for _, name := range ps.ServerListeners {
		if own[name] {
			continue
		}
		addr := strings.TrimPrefix(name, wire.ProxylessServerListenerPrefix)
		out = append(out, fmt.Sprintf("node %q asked for server listener %q (it listens on %s): %s",
			ps.ID, name, addr, whyNoListener(ps, as, addr)))
	}
	return out
}

// whyNoListener explains why a server listening on addr got no listener.
func whyNoListener(ps ProxyStatus, as publishedAs, addr string) string {
	host, p, err := net.SplitHostPort(addr)
	port, perr := strconv.Atoi(p)
	switch {
	case err != nil || perr != nil || net.ParseIP(host) == nil:
		return "that is not an IP:port address"
	case as.instance == nil:
		return fmt.Sprintf("no instance of service %q is registered with ID %q (node.id must be the instance's registry ID)",
			orNone(ps.Service), ps.ID)
	case !as.http:
		return fmt.Sprintf("service %q is not a gRPC service (medmesh-protocol), so its instances get no inbound listener", as.service)
	case net.ParseIP(as.instance.Address) == nil:
		return fmt.Sprintf("instance %q is registered at %q, which is not an IP address", ps.ID, as.instance.Address)
	case port != as.instance.Port:
		return fmt.Sprintf("no instance of service %q is registered on port %d (instance %q is registered at %s)",
			as.service, port, ps.ID, net.JoinHostPort(as.instance.Address, strconv.Itoa(as.instance.Port)))
	}
	return fmt.Sprintf("instance %q is registered at %s; a server must listen on that address or on 0.0.0.0 or [::]",
		ps.ID, net.JoinHostPort(as.instance.Address, strconv.Itoa(as.instance.Port)))
}

func orNone(s string) string {
	if s == "" {
		return "(none: node.cluster is empty)"
	}
	return s
}
