// Command demo is `make demo`: a real Consul dev agent, the medmesh control
// plane and a small hospital of proxyless gRPC services (EMR x2, imaging x2,
// HIS x1) calling each other through the mesh over mTLS. Every instance
// proves its identity with a one-time join token through its own `medmesh
// sidecar --svid-dir` before it starts, and Consul intentions allow exactly
// the calls the hospital makes. It prints the `medmesh status` table, the
// traffic and the callers' SPIFFE IDs every few seconds while a scripted
// story has a caller without an intention refused, stops and restarts an
// instance and fails and heals a health check, and it stops everything on
// Ctrl-C, SIGTERM or after DEMO_SECONDS seconds.
//
// Exit status: 0 when the demo ran and stopped cleanly (no child died on
// its own, nothing left running), 1 otherwise, 2 for bad flags.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/consul/api"

	"medmesh/api/admin"
	"medmesh/api/wire"
	"medmesh/internal/consulagent"
)

type config struct {
	medmesh, serviceBin    string
	xdsListen, adminListen string
	seconds                time.Duration // 0: until Ctrl-C
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
	fs.StringVar(&c.medmesh, "medmesh", "bin/medmesh", "the medmesh binary (make build)")
	fs.StringVar(&c.serviceBin, "service-bin", "bin/clinical-service", "the example service binary (go build ./examples/service)")
	fs.StringVar(&c.xdsListen, "xds-listen", wire.DefaultXDSAddress, "control plane xDS address; a free port is used if busy (port 0: always)")
	fs.StringVar(&c.adminListen, "admin-listen", wire.DefaultAdminAddress, "control plane admin address; a free port is used if busy (port 0: always)")
	fs.Float64Var(&seconds, "seconds", seconds, "stop after this many seconds (default $DEMO_SECONDS; 0: run until Ctrl-C)")
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
	if c.every <= 0 || c.callInterval <= 0 {
		return c, errors.New("--every and --interval must be positive")
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

// demo is one run: its processes, addresses and counters.
type demo struct {
	cfg       config
	out       *console
	sup       *supervisor
	traffic   *traffic
	consul    *consulagent.Agent
	cp        *proc
	instances []*instance
	runDir    string
	// bg tracks the story's background work (the denied call), which
	// must end before the teardown.
	bg sync.WaitGroup

	xdsAddr, adminAddr string
	unexpected         atomic.Int32
	// denied counts the story's refused calls; probeProblems the times
	// that refusal did not happen as it should.
	denied, probeProblems atomic.Int32
	stop                  func(reason string)
	// stopping is set when the demo begins to stop: a probe cut short
	// then is not a problem of the mesh.
	stopping atomic.Bool
}

func run(cfg config, w io.Writer) int {
	d := &demo{cfg: cfg, out: &console{w: w, start: time.Now()}, traffic: newTraffic(), instances: newInstances()}
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
		if d.consul != nil {
			d.consul.Stop()
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

// setUp starts Consul, the control plane and the services, and waits
// until every instance is healthy and connected to the control plane.
func (d *demo) setUp(ctx context.Context) error {
	for _, b := range []struct{ path, hint string }{
		{d.cfg.medmesh, "run `make build`"},
		{d.cfg.serviceBin, "run `go build -o bin/clinical-service ./examples/service`, or `make demo`"},
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

	d.out.printf("starting a Consul dev agent ...")
	var consulBin string
	d.consul, consulBin, err = startConsul(ctx, d.runDir)
	if errors.Is(err, consulagent.ErrNoBinary) {
		return fmt.Errorf("%w (`make demo` runs `make tools` first)", err)
	}
	if err != nil {
		return err
	}
	d.out.printf("Consul (%s) is up", consulBin)
	d.out.printf("Consul HTTP API and UI at http://%s (a dev agent: state in memory)", d.consul.Addr())
	if err := writeIntentions(d.consul.Client()); err != nil {
		return err
	}
	d.out.printf("Consul intentions written (service-intentions config entries): %s", intentionsSummary())

	if d.xdsAddr, err = pickAddr(d.cfg.xdsListen, d.out); err != nil {
		return err
	}
	if d.adminAddr, err = pickAddr(d.cfg.adminListen, d.out); err != nil {
		return err
	}
	// mTLS is the control plane's default; --state-dir is where it
	// creates and keeps its self-signed root (and the last good catalog).
	stateDir := filepath.Join(d.runDir, "controlplane")
	d.cp, err = d.sup.start("controlplane", d.cfg.medmesh, "controlplane",
		"--consul", "http://"+d.consul.Addr(), "--xds-listen", d.xdsAddr, "--admin-listen", d.adminAddr,
		"--state-dir", stateDir, "--log-format", "json")
	if err != nil {
		return err
	}
	d.out.printf("started controlplane pid=%d  xDS %s  admin http://%s  mTLS on, CA root in %s", d.cp.pid(), d.xdsAddr, d.adminAddr, filepath.Join(stateDir, "ca"))
	if err := d.waitFor(ctx, 30*time.Second, "the control plane to be ready", d.controlPlaneReady); err != nil {
		return err
	}
	d.out.printf("control plane is ready (it has the Consul catalog and intentions)")

	if err := d.startSidecars(ctx); err != nil {
		return err
	}
	d.out.printf("every sidecar holds its instance's SVID")
	for _, in := range d.instances {
		if in.port, err = consulagent.FreePort(); err != nil {
			return err
		}
		if err := d.startInstance(in); err != nil {
			return err
		}
	}
	if err := d.waitFor(ctx, 60*time.Second, "every instance to be healthy and connected", d.meshUp); err != nil {
		return err
	}
	d.out.printf("the mesh is up: %d instances healthy in Consul and connected to the control plane", len(d.instances))
	d.out.block(d.identityTable(true))
	return nil
}

// waitFor polls cond until it returns nil, the deadline passes or a
// process the demo depends on (the control plane, an instance, a sidecar)
// dies. It reads the instances' processes, so it runs on the demo's main
// goroutine only; background work uses poll with its own processes.
func (d *demo) waitFor(ctx context.Context, limit time.Duration, what string, cond func(context.Context) error) error {
	return d.poll(ctx, limit, what, func() []*proc {
		watch := []*proc{d.cp}
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

func (d *demo) controlPlaneReady(ctx context.Context) error {
	_, err := d.adminGet(ctx, "/readyz")
	return err
}

// meshUp: every instance passes its Consul check and holds an xDS stream.
func (d *demo) meshUp(ctx context.Context) error {
	body, err := d.adminGet(ctx, "/debug/proxies")
	if err != nil {
		return err
	}
	var pr admin.ProxiesResponse
	if err := json.Unmarshal(body, &pr); err != nil {
		return err
	}
	connected := map[string]bool{}
	for _, p := range pr.Proxies {
		connected[p.ID] = true
	}
	checks, _, err := d.consul.Client().Health().State(api.HealthPassing, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return err
	}
	passing := map[string]bool{}
	for _, c := range checks {
		passing[c.ServiceID] = true
	}
	var missing []string
	for _, in := range d.instances {
		if !connected[in.id] || !passing[in.id] {
			missing = append(missing, in.id)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("not yet healthy and connected: %s", strings.Join(missing, ", "))
	}
	return nil
}

func (d *demo) adminGet(ctx context.Context, path string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+d.adminAddr+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s: %s", path, resp.Status, strings.TrimSpace(string(body)))
	}
	return body, nil
}

func (d *demo) whereToLook() {
	admin := "http://" + d.adminAddr
	var b strings.Builder
	fmt.Fprintf(&b, "\nmedmesh demo is running. Where to look:\n")
	rows := [][2]string{
		{"status table", d.cfg.medmesh + " status --admin " + d.adminAddr},
		{"proxies (JSON)", admin + "/debug/proxies"},
		{"one proxy's xDS", admin + "/debug/config?node=his-1  (TLS contexts, RBAC from intentions)"},
		{"identities", admin + "/debug/proxies  (field identity of the <instance>/svid sidecars)"},
		{"intentions", "http://" + d.consul.Addr() + "/ui/dc1/intentions"},
		{"catalog", admin + "/debug/catalog"},
		{"metrics", admin + "/metrics"},
		{"readiness", admin + "/readyz"},
		{"xDS (ADS)", d.xdsAddr},
		{"Consul UI", "http://" + d.consul.Addr() + "/ui/  (HTTP API: http://" + d.consul.Addr() + "/v1/)"},
		{"process logs", d.sup.logDir + "  (removed at exit unless DEMO_KEEP_LOGS=1)"},
		{"try it", fmt.Sprintf("kill -USR1 %d  fails imaging-1's health check; kill -USR2 %d heals it", d.instance("imaging-1").proc.pid(), d.instance("imaging-1").proc.pid())},
		{"traces", "not yet: OpenTelemetry export arrives with the tracing issue"},
	}
	for _, r := range rows {
		fmt.Fprintf(&b, "  %-16s %s\n", r[0], r[1])
	}
	stop := "Ctrl-C stops everything."
	if d.cfg.seconds > 0 {
		stop = fmt.Sprintf("Stops by itself after DEMO_SECONDS=%g (or Ctrl-C).", d.cfg.seconds.Seconds())
	}
	fmt.Fprintf(&b, "Every %s: the status table, Consul health and the calls since the last table. Story events are marked ==>. %s\n\n", d.cfg.every, stop)
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
	fmt.Fprintf(&b, "  $ medmesh status --admin %s\n", d.adminAddr)
	b.WriteString(statusTable(ctx, d.cfg.medmesh, d.adminAddr))
	fmt.Fprintf(&b, "  Consul health: %s\n", consulHealth(d.consul.Client()))
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
	if p == d.cp {
		if l.Level == "WARN" || l.Level == "ERROR" {
			d.out.printf("%-12s | %s %s", p.name, l.Level, describe(line))
		}
		return
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
	if p == d.cp {
		d.stop("the control plane is gone")
	}
}

// tearDown stops everything in dependency order and reports the run.
func (d *demo) tearDown(failed bool) int {
	d.bg.Wait()
	if d.sup != nil {
		d.out.printf("stopping the services (each leaves Consul, drains for 1s, stops). The control plane will warn " +
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
		if d.cp != nil {
			if err := d.sup.stop(d.cp, 10*time.Second); err != nil {
				d.out.printf("%v", err)
			}
		}
	}
	consulGone := true
	if d.consul != nil {
		d.consul.Stop()
		consulGone = !answers(d.consul.Addr())
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
	fmt.Fprintf(&b, "  %d call(s) from %s to %s refused as intended (no intention allows them)\n", d.denied.Load(), deniedCaller, deniedTarget)
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
	if !consulGone {
		left = append(left, "consul (still answering on "+d.consul.Addr()+")")
	}
	if len(left) > 0 {
		d.out.printf("!! still running: %s", strings.Join(left, ", "))
	} else if d.sup != nil {
		d.out.printf("all %d processes started by the demo and the Consul agent have exited", d.sup.started())
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
	d.out.printf("result: calls_ok=%d calls_failed=%d unexpected_exits=%d leftover_processes=%d denied_as_intended=%d probe_problems=%d",
		ok, bad, d.unexpected.Load(), len(left), d.denied.Load(), d.probeProblems.Load())
	if failed {
		return 1
	}
	return 0
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
