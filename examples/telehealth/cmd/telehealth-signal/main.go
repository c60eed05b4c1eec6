// Command telehealth-signal runs the telehealth signalling service: the
// gRPC door for services, proxyless through medmesh (xds.NewGRPCServer,
// xDS credentials: mTLS, RBAC from intentions), registered in Consul as
// telehealth-signal (kind webrtc, PHI); and the browser door (the call
// page and its WebSocket) on --http-listen. Each party is handed its
// site's TURN relay (found in Consul) with credentials made from
// --turn-secret-file.
//
//	telehealth-signal --port 7400 --http-listen 127.0.0.1:8443 \
//	    --svid-dir /run/svid/telehealth-signal-1 --turn-secret-file /etc/medmesh/turn.secret
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/consul/api"

	"medmesh/api/wire"
	"medmesh/controlplane/bootstrap"
	"medmesh/examples/meshapp"
	tsignal "medmesh/examples/telehealth/signal"
	"medmesh/examples/telehealth/turnrelay"
	"medmesh/internal/consulagent"
)

type options struct {
	id, consul, xdsAddress, svidDir, site, httpListen, secretFile, logFormat string
	port                                                                     int
	ttl                                                                      time.Duration
	plaintextOpens                                                           bool
}

func parseFlags(args []string) (*options, error) {
	fs := flag.NewFlagSet("telehealth-signal", flag.ContinueOnError)
	o := &options{}
	defConsul := os.Getenv("CONSUL_HTTP_ADDR")
	if defConsul == "" {
		defConsul = "http://127.0.0.1:8500"
	}
	fs.StringVar(&o.id, "id", "", "instance ID: the Consul service ID and xDS node ID (default telehealth-signal-<port>)")
	fs.IntVar(&o.port, "port", 0, "gRPC port on 127.0.0.1 (0: a free port)")
	fs.StringVar(&o.httpListen, "http-listen", "127.0.0.1:8480", "the browser door (page and WebSocket); serve it behind the patient portal's HTTPS; empty: off")
	fs.StringVar(&o.consul, "consul", defConsul, "Consul HTTP address (default from CONSUL_HTTP_ADDR)")
	fs.StringVar(&o.xdsAddress, "xds-address", wire.DefaultXDSAddress, "medmesh control plane xDS address")
	fs.StringVar(&o.svidDir, "svid-dir", "", "where `medmesh sidecar --svid-dir` keeps this workload's SVID (needed when the control plane runs mTLS)")
	fs.StringVar(&o.site, "site", "", "this instance's site (medmesh-site): browsers get this site's relay")
	fs.StringVar(&o.secretFile, "turn-secret-file", "", "the secret shared with the site's TURN relays (mode 0600); without it no relay is handed out")
	fs.DurationVar(&o.ttl, "ttl", 6*time.Second, "TTL of the Consul health check")
	fs.StringVar(&o.logFormat, "log-format", "text", "text or json")
	fs.BoolVar(&o.plaintextOpens, "plaintext-opens", false, "let gRPC callers without a certificate open calls (a mesh run with --mtls=false only)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q (everything is a flag)", fs.Args())
	}
	if o.logFormat != "text" && o.logFormat != "json" {
		return nil, fmt.Errorf("--log-format %q: want text or json", o.logFormat)
	}
	if o.site != "" {
		if err := wire.ValidateSite(o.site); err != nil {
			return nil, fmt.Errorf("--site: %w", err)
		}
	}
	return o, nil
}

func main() {
	o, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "telehealth-signal:", err)
		os.Exit(2)
	}
	if o.port == 0 {
		if o.port, err = consulagent.FreePort(); err != nil {
			fmt.Fprintln(os.Stderr, "telehealth-signal:", err)
			os.Exit(1)
		}
	}
	if o.id == "" {
		o.id = tsignal.Service + "-" + strconv.Itoa(o.port)
	}
	// May not return: see meshapp.EnsureBootstrap for why it re-executes.
	path, owned, err := meshapp.EnsureBootstrap(bootstrap.Options{XDSAddress: o.xdsAddress, NodeID: o.id, Service: tsignal.Service, SVIDDir: o.svidDir},
		"--port="+strconv.Itoa(o.port), "--id="+o.id)
	if err != nil {
		fmt.Fprintln(os.Stderr, "telehealth-signal:", err)
		os.Exit(1)
	}
	var h slog.Handler = slog.NewTextHandler(os.Stderr, nil)
	if o.logFormat == "json" {
		h = slog.NewJSONHandler(os.Stderr, nil)
	}
	log := slog.New(h).With("instance", o.id)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err = run(ctx, o, log)
	stop()
	if owned {
		os.Remove(path)
	}
	if err != nil {
		log.Error("stopped with an error", "err", err)
		os.Exit(1)
	}
	log.Info("stopped")
}

func run(ctx context.Context, o *options, log *slog.Logger) error {
	so := tsignal.Options{Logger: log, Site: o.site, PlaintextOpens: o.plaintextOpens}
	if o.secretFile != "" {
		secret, err := readSecret(o.secretFile)
		if err != nil {
			return err
		}
		cfg := api.DefaultConfig()
		cfg.Address = o.consul
		c, err := api.NewClient(cfg)
		if err != nil {
			return fmt.Errorf("--consul %q: %w", o.consul, err)
		}
		so.Relays, so.TURNSecret = turnrelay.Consul{Client: c}, secret
	}
	srv := tsignal.NewServer(so)

	if o.httpListen != "" {
		hs := &http.Server{Addr: o.httpListen, Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second}
		go func() {
			if err := hs.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("browser door stopped", "addr", o.httpListen, "err", err)
			}
		}()
		log.Info("browser door", "addr", "http://"+o.httpListen+"/")
		defer hs.Close()
	}
	in := meshapp.Instance{Consul: o.consul, ID: o.id, Service: tsignal.Service, Port: o.port, TTL: o.ttl, Meta: tsignal.Meta(o.site)}
	return meshapp.Serve(ctx, in, o.xdsAddress, 0, log, srv.RegisterGRPC)
}

// readSecret reads a secret file, refusing one others may read.
func readSecret(path string) ([]byte, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("--turn-secret-file: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("--turn-secret-file %s: mode %v lets others read it; chmod 600", path, st.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--turn-secret-file: %w", err)
	}
	secret := []byte(strings.TrimSpace(string(b)))
	if len(secret) < 16 {
		return nil, fmt.Errorf("--turn-secret-file %s: %d bytes; want at least 16", path, len(secret))
	}
	return secret, nil
}
