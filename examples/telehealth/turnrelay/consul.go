package turnrelay

import (
	"context"
	"net"
	"strconv"

	"github.com/hashicorp/consul/api"

	"medmesh/registry"
)

// ServiceName is the relays' Consul service.
const ServiceName = "turn"

// Service meta a relay registers beside medmesh's own keys: where its
// listeners are, and the name TURN-over-TLS clients verify.
const (
	MetaUDPPort = "turn-udp-port"
	MetaTCPPort = "turn-tcp-port"
	MetaTLSPort = "turn-tls-port"
	MetaTLSName = "turn-tls-name"
	// MetaHost is the address clients send to (the relay address), which
	// may differ from the registered one.
	MetaHost = "turn-host"
)

// Meta is the relay's Consul service meta: a generic, non-PHI mesh
// service (it sees only encrypted DTLS and SRTP) at its site, with its
// listeners' ports. tlsName is the name in its TLS certificate, when
// clients must dial a name rather than the registered address.
func (r *Relay) Meta(site, tlsName string) map[string]string {
	meta := map[string]string{
		registry.MetaKind:     "generic",
		registry.MetaProtocol: "tcp",
		registry.MetaPHI:      "false",
	}
	if site != "" {
		meta[registry.MetaSite] = site
	}
	for _, l := range []struct {
		addr net.Addr
		key  string
	}{{r.UDPAddr, MetaUDPPort}, {r.TCPAddr, MetaTCPPort}, {r.TLSAddr, MetaTLSPort}} {
		if l.addr != nil {
			_, p, _ := net.SplitHostPort(l.addr.String())
			meta[l.key] = p
		}
	}
	if r.TLSAddr != nil && tlsName != "" {
		meta[MetaTLSName] = tlsName
	}
	meta[MetaHost] = r.host.String()
	return meta
}

// Port is the port to register: TURN over TLS when on (the TCP service
// the mesh knows), else TURN over TCP, else UDP.
func (r *Relay) Port() int {
	for _, a := range []net.Addr{r.TLSAddr, r.TCPAddr, r.UDPAddr} {
		if a != nil {
			_, p, _ := net.SplitHostPort(a.String())
			return atoi(p)
		}
	}
	return 0
}

// URLs are the ICE server URLs of one registered relay.
func URLs(address string, meta map[string]string) []string {
	if h := meta[MetaHost]; h != "" {
		address = h
	}
	var urls []string
	if p := meta[MetaUDPPort]; p != "" {
		urls = append(urls, "turn:"+net.JoinHostPort(address, p)+"?transport=udp")
	}
	if p := meta[MetaTCPPort]; p != "" {
		urls = append(urls, "turn:"+net.JoinHostPort(address, p)+"?transport=tcp")
	}
	if p := meta[MetaTLSPort]; p != "" {
		host := address
		if n := meta[MetaTLSName]; n != "" {
			host = n // the name in the relay's certificate
		}
		urls = append(urls, "turns:"+net.JoinHostPort(host, p)+"?transport=tcp")
	}
	return urls
}

// Consul finds a site's relays in the catalog: passing instances of the
// relay service whose site is the caller's. A site with no relay gets
// none (no relay of another site: the relay is site-local, as residency
// keeps it).
type Consul struct {
	Client  *api.Client
	Service string // default ServiceName
}

// RelayURLs implements signal.RelayFinder.
func (c Consul) RelayURLs(ctx context.Context, site string) ([]string, error) {
	svc := c.Service
	if svc == "" {
		svc = ServiceName
	}
	entries, _, err := c.Client.Health().Service(svc, "", true, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, err
	}
	var urls []string
	for _, e := range entries {
		s := e.Service.Meta[registry.MetaSite]
		if s == "" && e.Node != nil {
			s = e.Node.Meta[registry.MetaSite]
		}
		if s != site {
			continue
		}
		addr := e.Service.Address
		if addr == "" && e.Node != nil {
			addr = e.Node.Address
		}
		urls = append(urls, URLs(addr, e.Service.Meta)...)
	}
	return urls, nil
}

func atoi(s string) int { n, _ := strconv.Atoi(s); return n }
