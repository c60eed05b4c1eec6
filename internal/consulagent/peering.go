package consulagent

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/hashicorp/consul/api"
)

// Consul cluster peering on loopback, the way sites join in production:
// each site is its own datacenter; one side generates a peering token,
// the other establishes the peering with it, and each exports services to
// the other with an exported-services config entry. Consul requires gRPC
// over TLS on the servers for peering, so the agents get certificates
// from one CA made with Consul's own `consul tls` commands.

// ServerTLS are a Consul server's gRPC TLS files.
type ServerTLS struct {
	CAFile, CertFile, KeyFile string
}

// PeeringCA is a Consul agent CA that signs server certificates for
// several datacenters.
type PeeringCA struct {
	bin, dir string
}

// NewPeeringCA creates a CA in dir with `consul tls ca create`.
func NewPeeringCA(dir string) (*PeeringCA, error) {
	bin, err := FindBinary()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "tls", "ca", "create")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("consul tls ca create: %v: %s", err, out)
	}
	return &PeeringCA{bin: bin, dir: dir}, nil
}

// ServerTLS issues the server certificate of a datacenter.
func (ca *PeeringCA) ServerTLS(datacenter string) (*ServerTLS, error) {
	cmd := exec.Command(ca.bin, "tls", "cert", "create", "-server", "-dc", datacenter)
	cmd.Dir = ca.dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("consul tls cert create -dc %s: %v: %s", datacenter, err, out)
	}
	return &ServerTLS{
		CAFile:   filepath.Join(ca.dir, "consul-agent-ca.pem"),
		CertFile: filepath.Join(ca.dir, datacenter+"-server-consul-0.pem"),
		KeyFile:  filepath.Join(ca.dir, datacenter+"-server-consul-0-key.pem"),
	}, nil
}

// NewSite prepares an agent for one site: its own datacenter, peering
// enabled, a data dir under dir (not -dev unless dev, so that a restart
// keeps its peerings and catalog, as a site's Consul server does).
func NewSite(dir, datacenter string, ca *PeeringCA, dev bool) (*Agent, error) {
	a, err := New(dir, dev)
	if err != nil {
		return nil, err
	}
	a.Datacenter = datacenter
	if a.Peering, err = ca.ServerTLS(datacenter); err != nil {
		return nil, err
	}
	return a, nil
}

// PeeringAddr is the agent's gRPC TLS address, which a peer's servers
// dial; empty unless Peering is set.
func (a *Agent) PeeringAddr() string {
	if a.Peering == nil {
		return ""
	}
	return "127.0.0.1:" + strconv.Itoa(a.ports[3])
}

// Peer joins two sites: acceptor generates a token for the peering named
// dialerName on its side, dialer establishes it as acceptorName on its
// side, and Peer waits until both sides report it ACTIVE.
func Peer(ctx context.Context, acceptor *Agent, acceptorName string, dialer *Agent, dialerName string) error {
	return PeerVia(ctx, acceptor, acceptorName, dialer, dialerName, "")
}

// PeerVia is Peer with the dialer reaching the acceptor at via (e.g. an
// uplink.Link to acceptor.PeeringAddr()) instead of directly: the token
// names via as the acceptor's server address, as a site behind a load
// balancer or NAT hands out its external address. Empty via: directly.
func PeerVia(ctx context.Context, acceptor *Agent, acceptorName string, dialer *Agent, dialerName, via string) error {
	req := api.PeeringGenerateTokenRequest{PeerName: dialerName}
	if via != "" {
		req.ServerExternalAddresses = []string{via}
	}
	// A server that has just elected itself may still be setting up its
	// Connect CA, which peering needs: retry until ctx ends.
	var tok *api.PeeringGenerateTokenResponse
	err := retry(ctx, func() (err error) {
		tok, _, err = acceptor.Client().Peerings().GenerateToken(ctx, req, nil)
		return err
	})
	if err != nil {
		return fmt.Errorf("peering token on %s: %w", acceptorName, err)
	}
	err = retry(ctx, func() error {
		_, _, err := dialer.Client().Peerings().Establish(ctx,
			api.PeeringEstablishRequest{PeerName: acceptorName, PeeringToken: tok.PeeringToken}, nil)
		return err
	})
	if err != nil {
		return fmt.Errorf("establishing the peering on %s: %w", dialerName, err)
	}
	for _, side := range []struct {
		a    *Agent
		peer string
	}{{acceptor, dialerName}, {dialer, acceptorName}} {
		if err := WaitPeering(ctx, side.a, side.peer, api.PeeringStateActive); err != nil {
			return err
		}
	}
	return nil
}

// WaitPeering polls until the agent's peering is in the wanted state.
func WaitPeering(ctx context.Context, a *Agent, peer string, want api.PeeringState) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	var last api.PeeringState
	for {
		p, _, err := a.Client().Peerings().Read(ctx, peer, nil)
		if err == nil && p != nil {
			if last = p.State; last == want {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("peering %q on %s: state %q, want %q (log: %s)", peer, a.Datacenter, last, want, a.LogPath)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Export makes services visible to peers: service name -> the peers that
// may import it. It replaces the agent's exported-services entry.
func Export(ctx context.Context, a *Agent, services map[string][]string) error {
	entry := &api.ExportedServicesConfigEntry{Name: "default"}
	for name, consumers := range services {
		svc := api.ExportedService{Name: name}
		for _, p := range consumers {
			svc.Consumers = append(svc.Consumers, api.ServiceConsumer{Peer: p})
		}
		entry.Services = append(entry.Services, svc)
	}
	if _, _, err := a.Client().ConfigEntries().Set(entry, (&api.WriteOptions{}).WithContext(ctx)); err != nil {
		return fmt.Errorf("exporting services from %s: %w", a.Datacenter, err)
	}
	return nil
}

// retry calls f until it succeeds or ctx ends, returning its last error.
func retry(ctx context.Context, f func() error) error {
	for {
		err := f()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(250 * time.Millisecond):
		}
	}
}
