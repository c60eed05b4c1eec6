// Command demo is `make demo`: a small telemedicine network of three
// sites, the hub (the hospital) and two edge clinics, each its own real
// Consul datacenter with its own medmesh control plane, the sites peered
// with Consul cluster peering on loopback. Proxyless gRPC services (EMR,
// imaging and HIS at the hub; HIS and imaging at each clinic; a drug
// formulary, the one non-PHI service, at the hub and at north) call each
// other through the mesh over mTLS. Every instance proves its identity
// with a one-time join token through its own `medmesh sidecar --svid-dir`
// before it starts; the edge sites issue SVIDs from their own
// intermediate CA. It prints each site's `medmesh status` (peers,
// residency decisions), the traffic and the callers' SPIFFE IDs while a
// scripted story has a caller without an intention refused, a clinic's
// call to the hub's EMR held back by residency, instances stop and
// restart, the formulary fail over from north to the hub, and north's
// uplink cut and restored. It stops everything on Ctrl-C, SIGTERM or
// after DEMO_SECONDS seconds.
//
// Exit status: 0 when the demo ran and stopped cleanly (no child died on
// its own, nothing left running, every probe refused as intended), 1
// otherwise, 2 for bad flags.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/consul/api"

	"medmesh/api/wire"
	"medmesh/internal/consulagent"
	"medmesh/internal/jaegertest"
)

type config struct {
	medmesh, serviceBin    string
	binDir                 string // bin/vitals
	xdsListen, adminListen string
	seconds                time.Duration // 0: until Ctrl-C
	rounds                 int           // of the story; 0: until Ctrl-C
	step, every            time.Duration
	callInterval           time.Duration
	keepLogs               bool
}

func parseConfig(args []string, stderr io.Writer) (config, error) {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c config
	var seconds float64
	if v := os.Getenv("DEMO_SECONDS"); v != "" {
		s, err := strconv.ParseFloat(v, 64)
		if err != nil || s < 0 {
			return c, fmt.Errorf("DEMO_SECONDS=%q: want a number of seconds", v)
		}
		seconds = s
	}
	if v := os.Getenv("DEMO_ROUNDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return c, fmt.Errorf("DEMO_ROUNDS=%q: want a number of rounds", v)
		}
		c.rounds = n
	}
	fs.StringVar(&c.medmesh, "medmesh", "bin/medmesh", "the medmesh binary (make build)")
	fs.StringVar(&c.serviceBin, "service-bin", "bin/clinical-service", "the example service binary (go build ./examples/service)")
	fs.StringVar(&c.binDir, "bin-dir", "bin", "where the realtime examples' binaries are (vitals: go build ./examples/vitals/cmd/vitals)")
	fs.StringVar(&c.xdsListen, "xds-listen", wire.DefaultXDSAddress, "the hub control plane's xDS address; a free port is used if busy (port 0: always); the edge sites' are free ports")
	fs.StringVar(&c.adminListen, "admin-listen", wire.DefaultAdminAddress, "the hub control plane's admin address; a free port is used if busy (port 0: always); the edge sites' are free ports")
	fs.Float64Var(&seconds, "seconds", seconds, "stop after this many seconds (default $DEMO_SECONDS; 0: run until Ctrl-C)")
	fs.IntVar(&c.rounds, "rounds", c.rounds, "stop once the story has played this many times (default $DEMO_ROUNDS; 0: run until Ctrl-C or --seconds)")
	fs.DurationVar(&c.step, "step", 7*time.Second, "time between two events of the story")
	fs.DurationVar(&c.every, "every", 5*time.Second, "time between two status tables")
	fs.DurationVar(&c.callInterval, "interval", 250*time.Millisecond, "time between two calls from one instance to one service")
	fs.BoolVar(&c.keepLogs, "keep-logs", os.Getenv("DEMO_KEEP_LOGS") != "", "keep the run directory with every process's log (default $DEMO_KEEP_LOGS)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if c.every <= 0 || c.callInterval <= 0 || c.rounds < 0 {
		return c, errors.New("--every and --interval must be positive, --rounds not negative")
	}
	// A stop takes a second (drain) and its table comes `settle` later;
	// a shorter step would run the next event before the effect shows.
	if c.step < 5*time.Second {
		return c, errors.New("--step must be at least 5s")
	}
	c.seconds = time.Duration(seconds * float64(time.Second))
	return c, nil
}

func main() {
	cfg, err := parseConfig(os.Args[1:], os.Stderr)
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "demo:", err)
		}
		os.Exit(2)
	}
	os.Exit(run(cfg, os.Stdout))
}

// demo is one run: its sites, processes and counters.
type demo struct {
	cfg       config
	out       *console
	sup       *supervisor
	traffic   *traffic
	rt        *realtime
	jaeger    *jaegertest.Jaeger
	sites     []*site
	links     []*link
	instances []*instance // every site's, in site order
	runDir    string
	// bg tracks the story's background work (probes, waiting for a
	// peering), which must end before the teardown.
	bg sync.WaitGroup
	// probes maps a running probe's process to what it shows.
	probes sync.Map

	unexpected atomic.Int32
	// refused counts the probes' calls refused as the story intends;
	// probeProblems the times that did not happen as it should.
	refused, probeProblems atomic.Int32
	// cutPushes is the xDS responses north's control plane sent between
	// its uplink's cut and the peerings being active again; -1 until
	// measured.
	cutPushes atomic.Int32
	cutAt     int       // north's medmesh_xds_responses_total at the cut
	killed    *instance // the vitals instance the story killed, until restarted
	stop      func(reason string)
	// stopping is set when the demo begins to stop: a probe cut short
	// then is not a problem of the mesh.
	stopping atomic.Bool
}

func run(cfg config, w io.Writer) int {
	d := &demo{cfg: cfg, out: &console{w: w, start: time.Now()}, traffic: newTraffic(), rt: newRealtime(), sites: newNetwork()}
	for _, s := range d.sites {
		for _, in := range s.instances {
			in.site = s
			d.instances = append(d.instances, in)
		}
	}
	d.cutPushes.Store(-1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var once sync.Once
	d.stop = func(reason string) {
		once.Do(func() {
			d.out.printf("%s: stopping everything", reason)
			d.stopping.Store(true)
			cancel()
		})
	}

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		s := <-sigs
		d.stop(fmt.Sprintf("received %s (again to kill at once)", s))
		<-sigs
		d.out.printf("second signal: killing every process of the demo now")
		if d.sup != nil {
			d.sup.killAll()
		}
		for _, s := range d.sites {
			if s.consul != nil {
				s.consul.Stop()
			}
		}
		if d.jaeger != nil {
			d.jaeger.Stop()
		}
	}()
	if cfg.seconds > 0 {
		t := time.AfterFunc(cfg.seconds, func() { d.stop(fmt.Sprintf("DEMO_SECONDS=%g reached", cfg.seconds.Seconds())) })
		defer t.Stop()
	}

	failed := false
	if err := d.setUp(ctx); err != nil {
		if ctx.Err() == nil {
			d.out.printf("demo failed to start: %v", err)
			failed = true
		}
	} else {
		d.whereToLook()
		d.loop(ctx)
	}
	return d.tearDown(failed)
}

// setUp starts the sites (Consul, peerings, control planes) and the
// services, and waits until every instance is healthy and connected to
// its site's control plane.
func (d *demo) setUp(ctx context.Context) error {
	for _, b := range []struct{ path, hint string }{
		{d.cfg.medmesh, "run `make build`"},
		{d.cfg.serviceBin, "run `go build -o bin/clinical-service ./examples/service`, or `make demo`"},
		{filepath.Join(d.cfg.binDir, "vitals"), "run `go build -o bin/vitals ./examples/vitals/cmd/vitals`, or `make demo`"},
		{filepath.Join(d.cfg.binDir, "telehealth-signal"), "run `make demo`, which builds the telehealth commands"},
		{filepath.Join(d.cfg.binDir, "telehealth-turn"), "run `make demo`, which builds the telehealth commands"},
		{filepath.Join(d.cfg.binDir, "telehealth-peer"), "run `make demo`, which builds the telehealth commands"},
	} {
		if _, err := os.Stat(b.path); err != nil {
			return fmt.Errorf("%s not found: %s", b.path, b.hint)
		}
	}
	var err error
	if d.runDir, err = os.MkdirTemp("", "medmesh-demo-"); err != nil {
		return err
	}
	logDir := filepath.Join(d.runDir, "logs")
	if err := os.Mkdir(logDir, 0o700); err != nil {
		return err
	}
	d.sup = &supervisor{logDir: logDir, env: childEnv(d.runDir), onLine: d.onLine, onExit: d.onExit}

	// A trace backend first: every control plane, sidecar and service
	// exports to it (OTLP over HTTP), configured the standard way.
	if d.jaeger, err = jaegertest.Start(ctx, d.runDir); err != nil {
		if errors.Is(err, jaegertest.ErrNoBinary) {
			return fmt.Errorf("%w (`make demo` runs `make tools` first)", err)
		}
		return err
	}
	d.sup.env = append(d.sup.env, "OTEL_EXPORTER_OTLP_ENDPOINT="+d.jaeger.OTLPHTTPEndpoint())
	d.out.printf("Jaeger (trace backend, in memory) up: OTLP %s, query API %s", d.jaeger.OTLPHTTPEndpoint(), d.jaeger.QueryURL())
	d.out.printf("starting three Consul datacenters (hub, north, south), one server each, cluster peering enabled ...")
	if err := d.startConsuls(ctx); err != nil {
		return err
	}
	if err := d.peerSites(ctx); err != nil {
		return err
	}
	if err := d.startControlPlanes(ctx); err != nil {
		return err
	}
	if err := d.startSidecars(ctx); err != nil {
		return err
	}
	d.out.printf("every sidecar holds its instance's SVID")
	for _, in := range d.instances {
		if in.port, err = consulagent.FreePort(); err != nil {
			return err
		}
		if in.role == roleNurse || in.role == roleSignal {
			hp, err := consulagent.FreePort()
			if err != nil {
				return err
			}
			in.httpAddr = "127.0.0.1:" + strconv.Itoa(hp)
		}
		if in.role == roleTurn {
			if in.port2, err = consulagent.FreePort(); err != nil {
				return err
			}
		}
		if (in.role == roleTurn || in.role == roleSignal) && in.site.turnSecret == "" {
			if err := in.site.writeTurnSecret(); err != nil {
				return err
			}
		}
		if err := d.startInstance(in); err != nil {
			return err
		}
	}
	if err := d.waitFor(ctx, 60*time.Second, "every instance to be healthy and connected", d.meshUp); err != nil {
		return err
	}
	d.out.printf("the network is up: %d instances at %d sites, healthy in Consul and connected to their control planes", len(d.instances), len(d.sites))
	d.out.block(d.identityTable(true))
	var b strings.Builder
	b.WriteString("\nEach site's control plane, as an operator sees it (peers, and the residency decisions: what other sites' services this site's proxies are sent):\n")
	for _, s := range d.sites {
		fmt.Fprintf(&b, "  $ medmesh status --admin %s    # site %s, %s\n", s.adminAddr, s.name, s.about)
		b.WriteString(statusTable(ctx, d.cfg.medmesh, s.adminAddr))
	}
	d.out.block(b.String())
	return nil
}

// waitFor polls cond until it returns nil, the deadline passes or a
// process the demo depends on (the control plane, an instance, a sidecar)
// dies. It reads the instances' processes, so it runs on the demo's main
// goroutine only; background work uses poll with its own processes.
func (d *demo) waitFor(ctx context.Context, limit time.Duration, what string, cond func(context.Context) error) error {
	return d.poll(ctx, limit, what, func() []*proc {
		var watch []*proc
		for _, s := range d.sites {
			watch = append(watch, s.cp)
		}
		for _, in := range d.instances {
			watch = append(watch, in.proc, in.sidecar)
		}
		return watch
	}, cond)
}

// poll polls cond until it returns nil, the deadline passes or one of the
// processes watch returns (nil entries are skipped) has exited.
func (d *demo) poll(ctx context.Context, limit time.Duration, what string, watch func() []*proc, cond func(context.Context) error) error {
	deadline := time.Now().Add(limit)
	for {
		err := cond(ctx)
		if err == nil {
			return nil
		}
		for _, p := range watch() {
			if p != nil && p.exited() {
				return fmt.Errorf("%s exited (%v); see %s", p.name, p.err, filepath.Join(d.sup.logDir, p.name+".log"))
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("waited %s for %s: %v", limit, what, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// meshUp: every instance passes its Consul check and holds an xDS stream
// to its site's control plane.
func (d *demo) meshUp(ctx context.Context) error {
	var missing []string
	for _, s := range d.sites {
		pr, err := s.proxies(ctx)
		if err != nil {
			return err
		}
		connected := map[string]bool{}
		for _, p := range pr.Proxies {
			connected[p.ID] = true
		}
		checks, _, err := s.consul.Client().Health().State(api.HealthPassing, (&api.QueryOptions{}).WithContext(ctx))
		if err != nil {
			return err
		}
		passing := map[string]bool{}
		for _, c := range checks {
			passing[c.ServiceID] = true
		}
		for _, in := range s.instances {
			if (in.inMesh() && !connected[in.id]) || (in.registers() && !passing[in.id]) {
				missing = append(missing, in.id)
			}
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("not yet healthy and connected: %s", strings.Join(missing, ", "))
	}
	return nil
}

func (d *demo) whereToLook() {
	hub := d.sites[0]
	var b strings.Builder
	fmt.Fprintf(&b, "\nmedmesh demo is running. Where to look:\n")
	row := func(k, v string) { fmt.Fprintf(&b, "  %-18s %s\n", k, v) }
	for _, s := range d.sites {
		row("site "+s.name, fmt.Sprintf("%s status --admin %s   (admin http://%s, xDS %s, Consul UI http://%s/ui/)",
			d.cfg.medmesh, s.adminAddr, s.adminAddr, s.xdsAddr, s.consul.Addr()))
	}
	for _, s := range d.sites {
		row("UI site "+s.name, "http://"+s.adminAddr+"/ui  (status page: peers, proxies and their ACKs and NACKs, identities, "+
			"policies, residency, recent changes opening as trace waterfalls)")
	}
	admin := "http://" + hub.adminAddr
	row("residency", "http://"+d.site("north").adminAddr+"/debug/residency  (north: which other sites' services its proxies get, and why not)")
	row("peers", "http://"+d.site("north").adminAddr+"/debug/proxies  (field source.peers: state, stale since, imports)")
	row("one proxy's xDS", admin+"/debug/config?node=his-1  (TLS contexts, RBAC from intentions and residency)")
	row("catalog", admin+"/debug/catalog  (local and imported instances, with their site)")
	row("metrics", admin+"/metrics")
	for _, in := range d.instances {
		if in.role == roleNurse {
			row("nurse station", fmt.Sprintf("http://%s/  (site %s: the bedside monitor's frames, live, over a WebSocket)", in.httpAddr, in.site.name))
		}
	}
	row("process logs", d.sup.logDir+"  (removed at exit unless DEMO_KEEP_LOGS=1)")
	im := d.instance("imaging-1").proc.pid()
	row("try it", fmt.Sprintf("kill -USR1 %d  fails imaging-1's health check; kill -USR2 %d heals it", im, im))
	row("traces", d.jaeger.QueryURL()+"/api/traces?service=medmesh-controlplane&limit=5  (Jaeger's query API: a trace per configuration change, "+
		"each proxy's push to its ACK; request traces under service=his, emr, ...; Jaeger's own UI is not in its Go module build)")
	stop := "Ctrl-C stops everything."
	switch {
	case d.cfg.rounds > 0 && d.cfg.seconds > 0:
		stop = fmt.Sprintf("Stops by itself after %d round(s) of the story or DEMO_SECONDS=%g, whichever comes first (or Ctrl-C).", d.cfg.rounds, d.cfg.seconds.Seconds())
	case d.cfg.rounds > 0:
		stop = fmt.Sprintf("Stops by itself after %d round(s) of the story (or Ctrl-C).", d.cfg.rounds)
	case d.cfg.seconds > 0:
		stop = fmt.Sprintf("Stops by itself after DEMO_SECONDS=%g (or Ctrl-C).", d.cfg.seconds.Seconds())
	}
	fmt.Fprintf(&b, "Every %s: each site's control plane and peers, Consul health and the calls since the last table. Story events are marked ==>. %s\n\n", d.cfg.every, stop)
	d.out.block(b.String())
}

// loop prints the tables and plays the story until ctx ends.
func (d *demo) loop(ctx context.Context) {
	up := time.Now()
	clock := &storyClock{stepLen: d.cfg.step}
	ev, at := clock.nextEvent()
	event := time.NewTimer(time.Until(up.Add(at)))
	defer event.Stop()
	next := time.NewTimer(d.cfg.every)
	defer next.Stop()
	forget := time.NewTimer(time.Hour)
	forget.Stop()
	defer forget.Stop()
	since := "the last table"
	for {
		select {
		case <-ctx.Done():
			return
		case <-next.C:
			if ctx.Err() != nil {
				return // both were ready; do not print a table of a stopping mesh
			}
			d.report(ctx, since)
			since = "the last table"
			next.Reset(d.cfg.every)
		case <-forget.C:
			// The table after an event shows the mesh after it only: the
			// callers' reports of the second before the event would blur
			// what changed (the run totals still count them).
			d.traffic.resetWindow()
			since = d.out.elapsed()
		case <-event.C:
			d.out.printf("==> %s", ev.say)
			if err := ev.what(ctx, d); err != nil {
				d.out.printf("story step failed: %v", err)
			}
			forget.Reset(reportLag)
			next.Reset(settle)
			if clock.played(d.cfg.rounds) {
				// What the last event started in the background (waiting
				// for a peering) is part of the round.
				go func() {
					d.bg.Wait()
					d.stop(fmt.Sprintf("the story has played %d time(s) (--rounds)", d.cfg.rounds))
				}()
				continue
			}
			ev, at = clock.nextEvent()
			event.Reset(time.Until(up.Add(at)))
		}
	}
}

const (
	// reportLag covers a service's one-second call summary plus the
	// control plane's push: calls reported later were routed after the
	// event.
	reportLag = 1500 * time.Millisecond
	// settle is when the table after a story event is printed: long
	// enough after reportLag to hold a few calls per caller.
	settle = 3500 * time.Millisecond
)

func (d *demo) report(ctx context.Context, since string) {
	var b strings.Builder
	fmt.Fprintf(&b, "\n---- %s %s\n", d.out.elapsed(), strings.Repeat("-", 60))
	for _, s := range d.sites {
		fmt.Fprintf(&b, "  site %-5s %s\n", s.name, siteLine(ctx, s))
		fmt.Fprintf(&b, "             peers: %s\n", s.peersState(ctx))
		fmt.Fprintf(&b, "             Consul health: %s\n", consulHealth(s.consul.Client()))
		if rt := d.rt.line(s.name); rt != "" {
			fmt.Fprintf(&b, "             %s\n", rt)
		}
		if c := d.rt.callLine(s.name); c != "" {
			fmt.Fprintf(&b, "             %s\n", c)
		}
	}
	fmt.Fprintf(&b, "  Calls since %s (caller -> service):\n", since)
	b.WriteString(d.traffic.windowTable())
	b.WriteString("\n")
	d.out.block(b.String())
}

// onLine routes a child's log line: call summaries feed the traffic
// counters; notable events and problems are echoed; everything is in the
// child's log file already.
func (d *demo) onLine(p *proc, line []byte) {
	var l logLine
	if err := json.Unmarshal(line, &l); err != nil {
		// Not slog JSON: a panic, or a library writing to stderr.
		d.out.printf("%-12s | %s", p.name, line)
		return
	}
	if d.isControlPlane(p) {
		if l.Level == "WARN" || l.Level == "ERROR" {
			d.out.printf("%-12s | %s %s", p.name, l.Level, describe(line))
		}
		return
	}
	if in := d.instanceOf(p); in != nil && in.role != "" {
		if l.Msg == "vitals" || l.Msg == "call" {
			d.rt.add(in, line)
			return
		}
	}
	switch {
	case l.Msg == "calls":
		d.traffic.add(&l)
	case l.Msg == "served":
		d.traffic.addServed(&l)
	case l.Msg == "probe":
		d.onProbe(p, &l)
	case l.Msg == "SVID written":
		d.out.printf("%-12s | %s", p.name, describe(line))
	case l.Level == "WARN" || l.Level == "ERROR":
		d.out.printf("%-12s | %s %s", p.name, l.Level, describe(line))
	case echoed[l.Msg]:
		d.out.printf("%-12s | %s", p.name, describe(line))
	}
}

func (d *demo) onExit(p *proc) {
	d.unexpected.Add(1)
	d.out.printf("!! %s (pid %d) exited on its own: %v; its log: %s", p.name, p.pid(), p.err, filepath.Join(d.sup.logDir, p.name+".log"))
	if d.isControlPlane(p) {
		d.stop(p.name + " is gone")
	}
}

// instanceOf is the instance whose current process is p, or nil.
func (d *demo) instanceOf(p *proc) *instance {
	for _, in := range d.instances {
		if in.proc == p {
			return in
		}
	}
	return nil
}

func (d *demo) isControlPlane(p *proc) bool {
	for _, s := range d.sites {
		if s.cp == p {
			return true
		}
	}
	return false
}

// tearDown stops everything in dependency order and reports the run.
func (d *demo) tearDown(failed bool) int {
	d.bg.Wait()
	if d.sup != nil {
		d.out.printf("stopping the services (each leaves Consul, drains for 1s, stops). The control planes will warn " +
			"that the registry is suddenly empty and keep the last mesh for a grace period: expected here.")
		var wg sync.WaitGroup
		for _, in := range d.instances {
			if in.proc == nil {
				continue
			}
			wg.Add(1)
			go func(in *instance) {
				defer wg.Done()
				if err := d.sup.stop(in.proc, 10*time.Second); err != nil {
					d.out.printf("%v", err)
				}
			}(in)
		}
		wg.Wait()
		// The sidecars after their workloads: a draining server still
		// needs its certificates.
		for _, in := range d.instances {
			if in.sidecar != nil {
				wg.Add(1)
				go func(p *proc) {
					defer wg.Done()
					if err := d.sup.stop(p, 10*time.Second); err != nil {
						d.out.printf("%v", err)
					}
				}(in.sidecar)
			}
		}
		wg.Wait()
		for _, s := range d.sites {
			if s.cp != nil {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if err := d.sup.stop(s.cp, 10*time.Second); err != nil {
						d.out.printf("%v", err)
					}
				}()
			}
		}
		wg.Wait()
	}
	var consulLeft []string
	for _, l := range d.links {
		l.up.Close()
	}
	traces := ""
	if d.jaeger != nil {
		traces = d.traceSummary()
		d.jaeger.Stop()
	}
	for _, s := range d.sites {
		if s.consul != nil {
			s.consul.Stop()
			if answers(s.consul.Addr()) {
				consulLeft = append(consulLeft, "consul "+s.name+" (still answering on "+s.consul.Addr()+")")
			}
		}
	}

	ok, bad, table := d.traffic.totals()
	var b strings.Builder
	fmt.Fprintf(&b, "\nCalls over the whole run (by service called):\n")
	if table == "" {
		table = "    (none)\n"
	}
	b.WriteString(table)
	if ok+bad > 0 {
		fmt.Fprintf(&b, "  %d calls, %d ok, %d failed (%.2f%% ok)\n", ok+bad, ok, bad, 100*float64(ok)/float64(ok+bad))
	}
	fmt.Fprintf(&b, "  %d probe call(s) refused as intended (billing -> emr at the hub: no intention; his at north -> emr: residency)\n", d.refused.Load())
	for _, site := range d.rt.sites() {
		fmt.Fprintf(&b, "  realtime at %s, as last reported: %s\n", site, d.rt.line(site))
		if c := d.rt.callLine(site); c != "" {
			fmt.Fprintf(&b, "  video visit at %s, as last reported: %s\n", site, c)
		}
	}
	if n := d.cutPushes.Load(); n >= 0 {
		fmt.Fprintf(&b, "  xDS responses north's control plane sent from its uplink's cut until its peerings were active again: %d\n", n)
	}
	if traces != "" {
		b.WriteString(traces)
	}
	if seen := d.traffic.seenTotals(); seen != "" {
		fmt.Fprintf(&b, "Callers the servers saw over the whole run (SPIFFE ID from the client certificate):\n%s", seen)
	}
	if d.instances[0].spiffeID != "" {
		b.WriteString(d.identityTable(false))
	}
	d.out.block(b.String())

	var left []string
	if d.sup != nil {
		left = d.sup.leftovers()
	}
	left = append(left, consulLeft...)
	if len(left) > 0 {
		d.out.printf("!! still running: %s", strings.Join(left, ", "))
	} else if d.sup != nil {
		d.out.printf("all %d processes started by the demo and the %d Consul servers have exited", d.sup.started(), len(d.sites))
	}
	failed = failed || d.unexpected.Load() > 0 || len(left) > 0 || d.probeProblems.Load() > 0
	if d.runDir != "" {
		if d.cfg.keepLogs || failed {
			d.out.printf("logs kept in %s", d.runDir)
		} else if err := os.RemoveAll(d.runDir); err != nil {
			d.out.printf("cannot remove %s: %v", d.runDir, err)
		} else {
			d.out.printf("removed %s", d.runDir)
		}
	}
	d.out.printf("result: calls_ok=%d calls_failed=%d unexpected_exits=%d leftover_processes=%d refused_as_intended=%d probe_problems=%d pushes_after_reconnect=%d",
		ok, bad, d.unexpected.Load(), len(left), d.refused.Load(), d.probeProblems.Load(), d.cutPushes.Load())
	if failed {
		return 1
	}
	return 0
}

// traceSummary says what reached the trace backend, read back from
// Jaeger's query API before it stops (it keeps traces in memory).
func (d *demo) traceSummary() string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	services, err := d.jaeger.Services(ctx)
	if err != nil {
		return fmt.Sprintf("  traces: cannot read Jaeger's services: %v\n", err)
	}
	var parts []string
	for _, svc := range []string{"medmesh-controlplane", "his", "emr"} {
		if !slices.Contains(services, svc) {
			continue
		}
		ts, err := d.jaeger.Traces(ctx, svc, 1000)
		if err != nil {
			return fmt.Sprintf("  traces: cannot read Jaeger's traces of %s: %v\n", svc, err)
		}
		parts = append(parts, fmt.Sprintf("%s %d", svc, len(ts)))
	}
	return fmt.Sprintf("  traces in Jaeger (of %d services reporting): %s\n", len(services), strings.Join(parts, ", "))
}

// pickAddr returns want if it can be listened on, else a free loopback
// port: another control plane (or a test) may hold the contract defaults.
func pickAddr(want string, out *console) (string, error) {
	if l, err := net.Listen("tcp", want); err == nil {
		addr := l.Addr().String()
		l.Close()
		return addr, nil
	}
	p, err := consulagent.FreePort()
	if err != nil {
		return "", err
	}
	addr := "127.0.0.1:" + strconv.Itoa(p)
	out.printf("%s is busy (another control plane?); using %s instead", want, addr)
	return addr, nil
}

func answers(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// childEnv is the demo's environment for its children, minus anything
// that would point a service at another bootstrap; TMPDIR is the run
// directory, so the bootstrap files the services write go with it.
func childEnv(runDir string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "GRPC_XDS_BOOTSTRAP", "GRPC_XDS_BOOTSTRAP_CONFIG", "TMPDIR":
			continue
		}
		env = append(env, kv)
	}
	return append(env, "TMPDIR="+runDir)
}
