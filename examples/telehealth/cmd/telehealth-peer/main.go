// Command telehealth-peer runs one party of a telehealth call, a pion
// clinician or patient, as a workload of the mesh: it dials
// xds:///telehealth-signal proxyless (xDS credentials: mTLS with the SVID
// `medmesh sidecar --svid-dir` keeps fresh, admitted by the intentions of
// its --service), joins the call named --call, sets up the peer
// connection and keeps it up until SIGTERM or SIGINT. Two mesh parties
// meet by joining the same call name: the first to join opens the call
// and offers. The patient sends synthetic VP8 video and vitals frames
// (medmesh/examples/vitals/frame) on the "vitals" DataChannel; the
// clinician receives and counts them. When the call drops (the other
// party left or restarted, the connection failed) it joins again and
// sets up a new one, and counts it.
//
// It is a caller, not a server: it registers nothing in Consul.
//
// Every --report it logs one line with message "call" (peer.Report):
// state, setup, RTP packets and vitals frames received, frames failing
// their CRC, frame latency since the previous line, reconnects. Never a
// session description, an address, the call name, an invite or a
// reading.
//
//	telehealth-peer --role clinician --service clinician-station --id clinician-1 \
//	    --svid-dir /run/svid/clinician-1 --call visit-5f2c9a1e --udp-ports 49400-49599
//	telehealth-peer --role patient --service patient-app --id patient-1 \
//	    --svid-dir /run/svid/patient-1 --call visit-5f2c9a1e --udp-ports 49400-49599
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"

	"medmesh/api/wire"
	"medmesh/controlplane/bootstrap"
	"medmesh/examples/meshapp"
	"medmesh/examples/telehealth/peer"
	tsignal "medmesh/examples/telehealth/signal"
)

// defaultService is each role's Consul service identity (its SVID):
// the intentions of telehealth-signal name these.
var defaultService = map[string]string{
	tsignal.RoleClinician: "clinician-station",
	tsignal.RolePatient:   "patient-app",
}

type options struct {
	role, id, service, xdsAddress, svidDir string
	call, kind                             string
	report, frameEvery                     time.Duration
	logFormat                              string
	loopbackOnly, relayOnly                bool
	udpPortMin, udpPortMax                 uint16
}

func parseFlags(args []string) (*options, error) {
	fs := flag.NewFlagSet("telehealth-peer", flag.ContinueOnError)
	o := &options{}
	var ports string
	fs.StringVar(&o.role, "role", "", "clinician (receives and counts) or patient (sends video and vitals frames)")
	fs.StringVar(&o.id, "id", "", "instance ID: the xDS node ID in the bootstrap (default <service>-<pid>)")
	fs.StringVar(&o.service, "service", "", "the Consul service identity of the SVID (default clinician-station or patient-app, by --role)")
	fs.StringVar(&o.xdsAddress, "xds-address", wire.DefaultXDSAddress, "medmesh control plane xDS address")
	fs.StringVar(&o.svidDir, "svid-dir", "", "where `medmesh sidecar --svid-dir` keeps this workload's SVID (needed when the control plane runs mTLS)")
	fs.StringVar(&o.call, "call", "", "the call's name, the same for both parties: 8-128 characters of A-Z a-z 0-9 . _ -; choose it at random, it is not a patient reference (required)")
	fs.StringVar(&o.kind, "kind", "video-visit", "the kind of call, as the signalling service's audit log records it")
	fs.DurationVar(&o.report, "report", 5*time.Second, "how often to log the call's figures (message \"call\")")
	fs.DurationVar(&o.frameEvery, "frame-every", 20*time.Millisecond, "patient: one vitals frame this often (20ms: a 50 Hz monitor)")
	fs.StringVar(&o.logFormat, "log-format", "text", "text or json")
	fs.BoolVar(&o.loopbackOnly, "loopback-only", false, "gather and accept loopback ICE candidates only (a demo on one machine: no media packet leaves it)")
	fs.BoolVar(&o.relayOnly, "relay-only", false, "relay candidates only: media through the site's TURN relay that signalling hands out")
	fs.StringVar(&ports, "udp-ports", "", "UDP ports of the media, MIN-MAX, which the site's firewall opens (empty: any)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q (everything is a flag)", fs.Args())
	}
	if o.role != tsignal.RoleClinician && o.role != tsignal.RolePatient {
		return nil, fmt.Errorf("--role %q: want %s or %s", o.role, tsignal.RoleClinician, tsignal.RolePatient)
	}
	if o.call == "" {
		return nil, errors.New("--call is required: the name both parties of the call join")
	}
	// The server's own rules, so a bad name fails here rather than in
	// every join; the error does not quote the name.
	if err := tsignal.CheckJoin(tsignal.Message{Type: tsignal.TypeJoin, Call: o.call, Role: o.role, Kind: o.kind}); err != nil {
		return nil, fmt.Errorf("--call or --kind: %w", err)
	}
	if o.service == "" {
		o.service = defaultService[o.role]
	}
	if o.id == "" {
		o.id = o.service + "-" + strconv.Itoa(os.Getpid())
	}
	if o.report <= 0 || o.frameEvery <= 0 {
		return nil, errors.New("--report and --frame-every must be positive")
	}
	if o.logFormat != "text" && o.logFormat != "json" {
		return nil, fmt.Errorf("--log-format %q: want text or json", o.logFormat)
	}
	if ports != "" {
		var err error
		if o.udpPortMin, o.udpPortMax, err = parsePorts(ports); err != nil {
			return nil, fmt.Errorf("--udp-ports: %w", err)
		}
	}
	return o, nil
}

// parsePorts parses MIN-MAX, two UDP ports with MIN <= MAX.
func parsePorts(s string) (lo, hi uint16, err error) {
	a, b, ok := strings.Cut(s, "-")
	if !ok {
		return 0, 0, fmt.Errorf("%q: want MIN-MAX", s)
	}
	l, err1 := strconv.ParseUint(a, 10, 16)
	h, err2 := strconv.ParseUint(b, 10, 16)
	if err1 != nil || err2 != nil || l == 0 || l > h {
		return 0, 0, fmt.Errorf("%q: want MIN-MAX, ports 1-65535, MIN no more than MAX", s)
	}
	return uint16(l), uint16(h), nil
}

// peerOptions is the party the options describe.
func (o *options) peerOptions(log *slog.Logger) peer.Options {
	p := peer.Options{Role: o.role, Call: o.call, Kind: o.kind, LoopbackOnly: o.loopbackOnly, RelayOnly: o.relayOnly,
		UDPPortMin: o.udpPortMin, UDPPortMax: o.udpPortMax, Logger: log}
	if o.role == tsignal.RolePatient {
		p.SendVideo = true
		p.Vitals = &peer.VitalsSender{Interval: o.frameEvery, Reading: peer.SyntheticReading}
	}
	return p
}

func main() {
	o, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "telehealth-peer:", err)
		os.Exit(2)
	}
	// May not return: see meshapp.EnsureBootstrap for why it re-executes.
	path, owned, err := meshapp.EnsureBootstrap(bootstrap.Options{XDSAddress: o.xdsAddress, NodeID: o.id, Service: o.service, SVIDDir: o.svidDir},
		"--id="+o.id)
	if err != nil {
		fmt.Fprintln(os.Stderr, "telehealth-peer:", err)
		os.Exit(1)
	}
	log := newLogger(o.logFormat).With("instance", o.id)
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

func newLogger(format string) *slog.Logger {
	if format == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, nil))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, nil))
}

// run is one party until ctx ends: joins through the mesh, reports every
// --report, joins again when a call drops.
func run(ctx context.Context, o *options, log *slog.Logger) error {
	cc, err := meshapp.Dial(tsignal.Service)
	if err != nil {
		return err
	}
	defer cc.Close()
	// Wait for ready: a join waits for the mesh (routes, certificates)
	// and for the signalling service instead of failing while they come.
	dial := func(ctx context.Context) (tsignal.ClientConn, error) {
		return tsignal.Dial(ctx, cc, grpc.WaitForReady(true))
	}
	p := newParty(o.peerOptions(log), dial, log)
	log.Info("starting", "role", o.role, "service", o.service, "kind", o.kind, "signalling", "xds:///"+tsignal.Service)
	done := make(chan struct{})
	go func() {
		defer close(done)
		every(ctx, o.report, func() { log.Info(peer.ReportMessage, p.report().LogAttrs()...) })
	}()
	p.run(ctx)
	<-done
	log.Info(peer.ReportMessage, p.report().LogAttrs()...)
	return nil
}

func every(ctx context.Context, d time.Duration, f func()) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f()
		}
	}
}
