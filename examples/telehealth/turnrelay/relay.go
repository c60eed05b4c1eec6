// Package turnrelay is a site's TURN relay (pion/turn): the fallback
// path for a call's media when the two parties cannot reach each other's
// host candidates. It listens for TURN over UDP, TCP and TLS, allocates
// relayed UDP ports from a fixed range only, and admits clients with the
// time-limited credentials the signalling service hands out (TURN REST
// style, from a shared secret). It registers in Consul as a mesh service
// with its site, so the signalling service hands each party its own
// site's relay.
package turnrelay

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"

	"github.com/pion/logging"
	"github.com/pion/turn/v5"
)

// Config configures a relay.
type Config struct {
	// ListenIP is where the relay listens and allocates (e.g. 127.0.0.1,
	// or the site's media VLAN address).
	ListenIP net.IP
	// RelayIP is the address clients are told to send to (a public or
	// NATed address); default ListenIP.
	RelayIP net.IP
	// UDPPort, TCPPort and TLSPort are the TURN listeners; 0 leaves one
	// out, -1 picks a free port (tests).
	UDPPort, TCPPort, TLSPort int
	// TLS is the certificate for TURN over TLS (the name clients dial
	// must be in it); required when TLSPort is set.
	TLS *tls.Config
	// RelayPortMin and RelayPortMax are the UDP ports allocations use,
	// the range a firewall opens for media.
	RelayPortMin, RelayPortMax uint16
	// Realm is the TURN realm (default "medmesh").
	Realm string
	// Secret is shared with the signalling service, which makes each
	// party's credentials from it.
	Secret []byte
	Logger *slog.Logger
}

// Relay is a running TURN relay.
type Relay struct {
	srv *turn.Server
	// UDPAddr, TCPAddr and TLSAddr are where it listens (nil when off).
	UDPAddr, TCPAddr, TLSAddr net.Addr
	host                      net.IP // where clients send: the relay address
	closers                   []io.Closer
}

// Start starts a relay.
func Start(c Config) (*Relay, error) {
	if c.ListenIP == nil {
		return nil, errors.New("turnrelay: Config.ListenIP is required")
	}
	if len(c.Secret) == 0 {
		return nil, errors.New("turnrelay: Config.Secret is required (shared with the signalling service)")
	}
	if c.RelayPortMin == 0 || c.RelayPortMax < c.RelayPortMin {
		return nil, fmt.Errorf("turnrelay: relay port range %d-%d is not a range", c.RelayPortMin, c.RelayPortMax)
	}
	if c.TLSPort != 0 && c.TLS == nil {
		return nil, errors.New("turnrelay: Config.TLS is required with a TLS port")
	}
	if c.UDPPort == 0 && c.TCPPort == 0 && c.TLSPort == 0 {
		return nil, errors.New("turnrelay: no listener: set UDPPort, TCPPort or TLSPort")
	}
	if c.RelayIP == nil {
		c.RelayIP = c.ListenIP
	}
	if c.Realm == "" {
		c.Realm = "medmesh"
	}
	log := c.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	r := &Relay{host: c.RelayIP}
	gen := func() turn.RelayAddressGenerator {
		// Allocations are UDP relays in the fixed range, whichever
		// transport the client reached the relay over.
		return &turn.RelayAddressGeneratorPortRange{
			RelayAddress: c.RelayIP, Address: c.ListenIP.String(),
			MinPort: c.RelayPortMin, MaxPort: c.RelayPortMax,
		}
	}
	cfg := turn.ServerConfig{
		Realm:         c.Realm,
		LoggerFactory: quietLoggers{},
		AuthHandler:   turn.NewLongTermAuthHandler(string(c.Secret), quietLoggers{}.NewLogger("auth")),
	}
	if c.UDPPort != 0 {
		pc, err := net.ListenPacket("udp4", hostPort(c.ListenIP, c.UDPPort))
		if err != nil {
			return nil, fmt.Errorf("turnrelay: UDP listener: %w", err)
		}
		r.closers = append(r.closers, pc)
		r.UDPAddr = pc.LocalAddr()
		cfg.PacketConnConfigs = append(cfg.PacketConnConfigs, turn.PacketConnConfig{PacketConn: pc, RelayAddressGenerator: gen()})
	}
	for _, l := range []struct {
		port int
		tls  *tls.Config
		addr *net.Addr
	}{{c.TCPPort, nil, &r.TCPAddr}, {c.TLSPort, c.TLS, &r.TLSAddr}} {
		if l.port == 0 {
			continue
		}
		ln, err := net.Listen("tcp4", hostPort(c.ListenIP, l.port))
		if err != nil {
			r.closeListeners()
			return nil, fmt.Errorf("turnrelay: TCP listener: %w", err)
		}
		*l.addr = ln.Addr()
		if l.tls != nil {
			ln = tls.NewListener(ln, l.tls)
		}
		r.closers = append(r.closers, ln)
		cfg.ListenerConfigs = append(cfg.ListenerConfigs, turn.ListenerConfig{Listener: ln, RelayAddressGenerator: gen()})
	}
	srv, err := turn.NewServer(cfg)
	if err != nil {
		r.closeListeners()
		return nil, fmt.Errorf("turnrelay: %w", err)
	}
	r.srv = srv
	log.Info("TURN relay listening", "udp", addrString(r.UDPAddr), "tcp", addrString(r.TCPAddr), "tls", addrString(r.TLSAddr),
		"relay_ports", fmt.Sprintf("%d-%d", c.RelayPortMin, c.RelayPortMax))
	return r, nil
}

// Allocations is the number of live allocations.
func (r *Relay) Allocations() int { return r.srv.AllocationCount() }

// Close stops the relay and its allocations.
func (r *Relay) Close() error { return r.srv.Close() }

func (r *Relay) closeListeners() {
	for _, c := range r.closers {
		c.Close()
	}
}

func hostPort(ip net.IP, port int) string {
	if port < 0 {
		port = 0
	}
	return net.JoinHostPort(ip.String(), strconv.Itoa(port))
}

func addrString(a net.Addr) string {
	if a == nil {
		return "off"
	}
	return a.String()
}

// quietLoggers drops pion's own logging: its debug lines name client
// addresses per packet, and its errors are reported through ours.
type quietLoggers struct{}

func (quietLoggers) NewLogger(string) logging.LeveledLogger {
	return logging.NewDefaultLeveledLoggerForScope("", logging.LogLevelDisabled, io.Discard)
}
