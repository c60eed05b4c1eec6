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
)

// Registration is the relay's Consul registration: a generic, non-PHI
// mesh service (it sees only encrypted SRTP and DTLS) at its site. The
// registered port is TURN over TLS when on (the TCP service the mesh
// routes), else TURN over TCP, else UDP.
func (r *Relay) Registration(id, site, tlsName string) *api.AgentServiceRegistration {
	meta := map[string]string{
		registry.MetaKind:     "generic",
		registry.MetaProtocol: "tcp",
		registry.MetaPHI:      "false",
	}
	if site != "" {
		meta[registry.MetaSite] = site
	}
	var host string
	var port int
	for _, l := range []struct {
		addr net.Addr
		key  string
	}{{r.UDPAddr, MetaUDPPort}, {r.TCPAddr, MetaTCPPort}, {r.TLSAddr, MetaTLSPort}} {
		if l.addr == nil {
			continue
		}
		h, p, _ := net.SplitHostPort(l.addr.String())
		meta[l.key] = p
		host, port = h, atoi(p)
	}
	if r.TLSAddr != nil && tlsName != "" {
		meta[MetaTLSName] = tlsName
	}
	return &api.AgentServiceRegistration{ID: id, Name: ServiceName, Address: host, Port: port, Meta: meta}
}

// URLs are the ICE server URLs of one registered relay.
func URLs(address string, meta map[string]string) []string {
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
