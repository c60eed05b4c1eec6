// Command telehealth-turn runs a site's TURN relay for telehealth calls
// (pion/turn): TURN over UDP and TCP, and over TLS with --tls-cert and
// --tls-key; relayed media on the UDP ports of --relay-ports only. It
// registers in Consul as service turn (generic, at --site), so the
// signalling service hands the site's parties this relay. Credentials
// are the signalling service's, made from the shared --secret-file.
//
//	telehealth-turn --site north --listen-ip 10.20.0.5 --relay-ports 49160-49359 \
//	    --secret-file /etc/medmesh/turn.secret --tls-cert turn.pem --tls-key turn-key.pem --tls-name turn.north.example
package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"medmesh/api/wire"
	"medmesh/examples/meshapp"
	"medmesh/examples/telehealth/turnrelay"
)

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(os.Args[1:], log); err != nil {
		fmt.Fprintln(os.Stderr, "telehealth-turn:", err)
		os.Exit(1)
	}
}

func run(args []string, log *slog.Logger) error {
	fs := flag.NewFlagSet("telehealth-turn", flag.ContinueOnError)
	id := fs.String("id", "", "Consul service ID (default turn-<site or local>)")
	site := fs.String("site", "", "the relay's site (medmesh-site)")
	listenIP := fs.String("listen-ip", "127.0.0.1", "address to listen and relay on")
	relayIP := fs.String("relay-ip", "", "address clients are told to send to (default --listen-ip)")
	udp := fs.Int("udp-port", 3478, "TURN over UDP (0: off)")
	tcp := fs.Int("tcp-port", 3478, "TURN over TCP (0: off)")
	tlsPort := fs.Int("tls-port", 5349, "TURN over TLS, with --tls-cert (0: off)")
	certFile := fs.String("tls-cert", "", "certificate for TURN over TLS (the name clients dial must be in it)")
	keyFile := fs.String("tls-key", "", "its key")
	tlsName := fs.String("tls-name", "", "the name in the certificate that clients dial (default the address)")
	ports := fs.String("relay-ports", "49160-49359", "UDP ports for relayed media, MIN-MAX")
	secretFile := fs.String("secret-file", "", "secret shared with the signalling service (mode 0600)")
	consul := fs.String("consul", envOr("CONSUL_HTTP_ADDR", "http://127.0.0.1:8500"), "Consul HTTP address; empty: do not register")
	logFormat := fs.String("log-format", "text", "text or json")
	if err := fs.Parse(args); err != nil {
		return err
	}
	switch *logFormat {
	case "text":
	case "json":
		log = slog.New(slog.NewJSONHandler(os.Stderr, nil))
	default:
		return fmt.Errorf("--log-format %q: want text or json", *logFormat)
	}
	cfg := turnrelay.Config{ListenIP: net.ParseIP(*listenIP), UDPPort: *udp, TCPPort: *tcp, Logger: log}
	if cfg.ListenIP == nil {
		return fmt.Errorf("--listen-ip %q is not an IP address", *listenIP)
	}
	if *relayIP != "" {
		if cfg.RelayIP = net.ParseIP(*relayIP); cfg.RelayIP == nil {
			return fmt.Errorf("--relay-ip %q is not an IP address", *relayIP)
		}
	}
	if *site != "" {
		if err := wire.ValidateSite(*site); err != nil {
			return fmt.Errorf("--site: %w", err)
		}
	}
	lo, hi, ok := strings.Cut(*ports, "-")
	pmin, err1 := strconv.ParseUint(lo, 10, 16)
	pmax, err2 := strconv.ParseUint(hi, 10, 16)
	if !ok || err1 != nil || err2 != nil {
		return fmt.Errorf("--relay-ports %q: want MIN-MAX", *ports)
	}
	cfg.RelayPortMin, cfg.RelayPortMax = uint16(pmin), uint16(pmax)
	if *certFile != "" {
		cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
		if err != nil {
			return fmt.Errorf("--tls-cert/--tls-key: %w", err)
		}
		cfg.TLS = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
		cfg.TLSPort = *tlsPort
	}
	if *secretFile == "" {
		return fmt.Errorf("--secret-file is required (the secret shared with telehealth-signal)")
	}
	st, err := os.Stat(*secretFile)
	if err != nil {
		return fmt.Errorf("--secret-file: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("--secret-file %s: mode %v lets others read it; chmod 600", *secretFile, st.Mode().Perm())
	}
	b, err := os.ReadFile(*secretFile)
	if err != nil {
		return fmt.Errorf("--secret-file: %w", err)
	}
	cfg.Secret = []byte(strings.TrimSpace(string(b)))

	relay, err := turnrelay.Start(cfg)
	if err != nil {
		return err
	}
	defer relay.Close()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *consul != "" {
		if *id == "" {
			*id = "turn-local"
			if *site != "" {
				*id = "turn-" + *site
			}
		}
		reg, err := meshapp.NewRegistration(meshapp.Instance{Consul: *consul, ID: *id, Service: turnrelay.ServiceName,
			Port: relay.Port(), Meta: relay.Meta(*site, *tlsName), TTL: 6 * time.Second}, log)
		if err != nil {
			return err
		}
		if err := reg.Register(ctx); err != nil {
			return err
		}
		hb := reg.StartHeartbeat(ctx)
		defer func() { hb.Stop(); reg.Deregister() }()
	}
	<-ctx.Done()
	return nil
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
