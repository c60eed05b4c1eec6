// Command vitals runs one workload of the vitals example as a proxyless
// gRPC workload of the medmesh mesh (mTLS through xDS credentials with the
// SVID `medmesh sidecar --svid-dir` keeps fresh):
//
//	vitals service   the vitals service: devices stream to it, it admits
//	                 each frame by priority and forwards it to the nurse
//	                 station (registers in Consul as "vitals")
//	vitals nurse     the nurse station: receives the frames, puts each
//	                 device's back in order, serves a page and a WebSocket
//	                 (registers as "nurse-station")
//	vitals device    a bedside monitor streaming to xds:///vitals
//
// Every --report it logs one JSON line of counters (message "vitals"),
// never a vital sign, a device serial or a patient reference.
// docs/vitals-frames.md describes the frames; examples/vitals/README.md
// the example.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"medmesh/api/wire"
	"medmesh/controlplane/bootstrap"
	"medmesh/examples/meshapp"
	"medmesh/examples/vitals/bedside"
	"medmesh/examples/vitals/nurse"
	"medmesh/examples/vitals/vitalsrpc"
	"medmesh/examples/vitals/vitalsvc"
	"medmesh/registry"
	"medmesh/sidecar/sched"
)

// Service names in Consul.
const (
	vitalsService = "vitals"
	nurseService  = "nurse-station"
	deviceService = "bedside-monitor"
)

type options struct {
	role                     string
	id                       string
	port                     int
	consul, xdsAddr, svidDir string
	report, ttl              time.Duration
	logFormat                string
	limit                    int
	work                     time.Duration
	httpListen               string
	device                   string
	alarmEvery, historyEvery time.Duration
	ecgEvery                 time.Duration
}

func parse(args []string) (*options, error) {
	if len(args) == 0 {
		return nil, errors.New("usage: vitals service|nurse|device [flags]")
	}
	o := &options{role: args[0]}
	switch o.role {
	case "service", "nurse", "device":
	default:
		return nil, fmt.Errorf("unknown role %q: want service, nurse or device", o.role)
	}
	fs := flag.NewFlagSet("vitals "+o.role, flag.ContinueOnError)
	defConsul := os.Getenv("CONSUL_HTTP_ADDR")
	if defConsul == "" {
		defConsul = "http://127.0.0.1:8500"
	}
	fs.StringVar(&o.id, "id", "", "instance ID: the Consul service ID and the xDS node ID (default <role>-<port>)")
	fs.IntVar(&o.port, "port", 0, "gRPC port on 127.0.0.1 (service, nurse; 0: a free port)")
	fs.StringVar(&o.consul, "consul", defConsul, "Consul HTTP address")
	fs.StringVar(&o.xdsAddr, "xds-address", wire.DefaultXDSAddress, "medmesh control plane xDS address")
	fs.StringVar(&o.svidDir, "svid-dir", "", "where `medmesh sidecar --svid-dir` keeps this workload's SVID (needed with mTLS)")
	fs.DurationVar(&o.report, "report", 5*time.Second, "how often to log the counters")
	fs.DurationVar(&o.ttl, "ttl", 6*time.Second, "TTL of the Consul health check")
	fs.StringVar(&o.logFormat, "log-format", "text", "text or json")
	fs.IntVar(&o.limit, "limit", 8, "service: frames worked on at once (the scheduler's limit)")
	fs.DurationVar(&o.work, "work", time.Millisecond, "service: service time per frame; capacity is --limit / --work frames per second")
	fs.StringVar(&o.httpListen, "http-listen", "127.0.0.1:0", "nurse: address of the page and its WebSocket")
	fs.StringVar(&o.device, "device", "", "device: pseudonymous handle, e.g. bed-07 (default the --id)")
	fs.DurationVar(&o.ecgEvery, "ecg-every", 40*time.Millisecond, "device: one ECG chunk (10 samples) every this long: 40ms is 250 Hz")
	fs.DurationVar(&o.alarmEvery, "alarm-every", 0, "device: raise a cardiac-arrest alarm this often (0: on SIGUSR1 only)")
	fs.DurationVar(&o.historyEvery, "history-every", 0, "device: one history-sync frame (background bulk) this often (0: none)")
	if err := fs.Parse(args[1:]); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if o.report <= 0 || o.limit <= 0 || o.work < 0 {
		return nil, errors.New("--report and --limit must be positive, --work not negative")
	}
	return o, nil
}

func main() {
	o, err := parse(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "vitals:", err)
		os.Exit(2)
	}
	if o.role != "device" && o.port == 0 {
		if o.port, err = freePort(); err != nil {
			fmt.Fprintln(os.Stderr, "vitals:", err)
			os.Exit(1)
		}
	}
	if o.id == "" {
		o.id = o.role + "-" + strconv.Itoa(o.port)
	}
	if o.device == "" {
		o.device = o.id
	}
	svc := map[string]string{"service": vitalsService, "nurse": nurseService, "device": deviceService}[o.role]
	path, owned, err := meshapp.EnsureBootstrap(bootstrap.Options{XDSAddress: o.xdsAddr, NodeID: o.id, Service: svc, SVIDDir: o.svidDir},
		"--port="+strconv.Itoa(o.port), "--id="+o.id)
	if err != nil {
		fmt.Fprintln(os.Stderr, "vitals:", err)
		os.Exit(1)
	}
	if owned {
		defer os.Remove(path)
	}
	log := newLogger(o.logFormat).With("instance", o.id)
	signal.Ignore(syscall.SIGPIPE)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	flushTraces, err := meshapp.StartTracing(svc, o.id, log)
	if err != nil {
		log.Error("tracing", "err", err)
		os.Exit(2)
	}
	run := map[string]func(context.Context, *options, *slog.Logger) error{"service": runService, "nurse": runNurse, "device": runDevice}[o.role]
	err = run(ctx, o, log)
	flushTraces()
	if err != nil {
		log.Error("stopped with an error", "err", err)
		if owned {
			os.Remove(path)
		}
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

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// serve runs the role's gRPC services in the mesh until ctx ends.
func serve(ctx context.Context, o *options, log *slog.Logger, service string, meta map[string]string, register func(vitalsrpc.Registrar)) error {
	in := meshapp.Instance{Consul: o.consul, ID: o.id, Service: service, Port: o.port, TTL: o.ttl, Meta: meta}
	return meshapp.Serve(ctx, in, o.xdsAddr, time.Second, log, register)
}

func runService(ctx context.Context, o *options, log *slog.Logger) error {
	cc, err := meshapp.Dial(nurseService)
	if err != nil {
		return err
	}
	defer cc.Close()
	s := vitalsvc.New(vitalsvc.Options{
		Sched: sched.New(sched.Config{Limit: o.limit}), Work: o.work, Forward: vitalsvc.ForwardTo(cc), Log: log,
	})
	go every(ctx, o.report, func() {
		st := s.Stats()
		log.Info("vitals", "streams", st.Streams, "active", st.Active, "frames", st.Frames, "forwarded", st.Forwarded, "shed", st.Shed,
			"requeued", st.Requeued, "corrupt", st.Corrupt, "forward_errors", st.ForwardErrors)
	})
	meta := map[string]string{registry.MetaKind: "vitals", registry.MetaProtocol: "grpc"}
	return serve(ctx, o, log, vitalsService, meta, func(r vitalsrpc.Registrar) { vitalsrpc.RegisterVitals(r, s) })
}

func runNurse(ctx context.Context, o *options, log *slog.Logger) error {
	st := nurse.New(log, nil)
	hl, err := net.Listen("tcp", o.httpListen)
	if err != nil {
		return fmt.Errorf("--http-listen %s: %w", o.httpListen, err)
	}
	hs := &http.Server{Handler: st.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go hs.Serve(hl)
	defer hs.Close()
	log.Info("nurse station page", "url", "http://"+hl.Addr().String()+"/")
	go every(ctx, o.report, func() {
		s := st.Stats()
		attrs := []any{"devices", len(s.Devices)}
		for c, cs := range s.Classes {
			name := nurse.Class(c).String()
			attrs = append(attrs, name+"_frames", cs.Frames, name+"_p50_ms", ms(cs.P50), name+"_p99_ms", ms(cs.P99))
		}
		var dups uint64
		for _, d := range s.Devices {
			dups += d.Duplicates
		}
		log.Info("vitals", append(attrs, "duplicates_dropped", dups)...)
		st.Reset()
	})
	// The nurse station receives vitals: kind vitals (PHI, default deny;
	// long-lived streams, no request timeout).
	meta := map[string]string{registry.MetaKind: "vitals", registry.MetaProtocol: "grpc"}
	return serve(ctx, o, log, nurseService, meta, func(r vitalsrpc.Registrar) { vitalsrpc.RegisterNurse(r, st) })
}

func runDevice(ctx context.Context, o *options, log *slog.Logger) error {
	cc, err := meshapp.Dial(vitalsService)
	if err != nil {
		return err
	}
	defer cc.Close()
	opts := bedside.Typical(o.device)
	opts.ECGEvery, opts.AlarmEvery, opts.HistoryEvery, opts.Log = o.ecgEvery, o.alarmEvery, o.historyEvery, log
	d := bedside.New(opts)
	alarms := make(chan os.Signal, 1)
	signal.Notify(alarms, syscall.SIGUSR1)
	defer signal.Stop(alarms)
	go func() {
		for range alarms {
			d.Alarm()
		}
	}()
	go every(ctx, o.report, func() {
		s := d.Stats()
		log.Info("vitals", "device", o.device, "sent", s.Sent, "sent_reliable", s.SentReliable, "acked", s.Acked,
			"unacked", s.Unacked, "resends", s.Resends, "reconnects", s.Reconnects, "window_full", s.WindowFull, "alarms", s.Alarms)
	})
	return d.Run(ctx, bedside.OpenerFor(cc))
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

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
