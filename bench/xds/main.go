// Command xds benchmarks medmesh's control plane at hospital scale: a
// synthetic catalog (by default 1,000 services x 10 instances) in a real
// Consul agent, the control plane as a child process of its own, and
// simulated Envoy proxies (half state-of-the-world, half delta) connected
// over ADS. It prints one `BENCH name=value` line per figure (CONTRACT.md)
// and a short table.
//
// Run it with `make bench`, or for a quick run:
//
//	go run ./bench/xds -services 100 -proxies 100 -changes 10
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/hashicorp/consul/api"

	"medmesh/internal/consulagent"
	"medmesh/internal/procstat"
)

type config struct {
	services, instances, proxies, changes int
	conns, registerWorkers, starters      int
	fullTimeout, changeTimeout, gap       time.Duration
	seed                                  uint64
	keep, restart, stages                 bool
	label                                 string
	consulMaxConns                        int
	inProcess                             bool
	cpuProfile, memProfile                string
	medmesh, cpGoMemLimit                 string
	// Edge scale (scale.go).
	scale                 bool
	callees, scaleChanges int
	scopeMeta             string
	fullMeshProxies       int
	steps                 []int
}

func main() {
	var c config
	flag.IntVar(&c.services, "services", 1000, "synthetic services")
	flag.IntVar(&c.instances, "instances", 10, "instances per service")
	flag.IntVar(&c.proxies, "proxies", 1000, "simulated proxies (half SotW, half delta)")
	flag.IntVar(&c.changes, "changes", 24, "endpoint health changes to time (alternately critical and back)")
	flag.IntVar(&c.conns, "conns", 0, "gRPC connections shared by the proxies (0: one per proxy, as real Envoys)")
	flag.IntVar(&c.registerWorkers, "register-workers", 32, "concurrent Consul catalog writes while registering")
	flag.IntVar(&c.starters, "starters", 64, "proxies connecting at once")
	flag.DurationVar(&c.fullTimeout, "timeout", 15*time.Minute, "limit for reaching full config")
	flag.DurationVar(&c.changeTimeout, "change-timeout", 30*time.Second, "limit for one change to reach every proxy")
	flag.DurationVar(&c.gap, "gap", 250*time.Millisecond, "pause after a change converged, so its trailing work is charged to it")
	flag.Uint64Var(&c.seed, "seed", 1, "seed for choosing which instances change")
	flag.BoolVar(&c.keep, "keep", false, "keep the work directory (Consul and control plane logs)")
	flag.BoolVar(&c.restart, "restart", true, "finally restart the control plane on the same catalog and count what reconnecting proxies are sent")
	flag.BoolVar(&c.stages, "stages", false, "also time Consul's part of each change with a blocking query of the benchmark's own (a read of every check per change: meant for small catalogs)")
	flag.StringVar(&c.label, "label", "", "names this scenario in the figures (e.g. small: xds_convergence_small_p99_ms, small_controlplane_cpu_s_per_change)")
	// The control plane holds four blocking queries whatever the catalog
	// size, so Consul's default connection limit (200 per client address)
	// is kept unless asked otherwise.
	flag.IntVar(&c.consulMaxConns, "consul-max-conns-per-client", 0,
		"Consul's limits.http_max_conns_per_client; 0 leaves Consul's default (200)")
	flag.StringVar(&c.medmesh, "medmesh", "", "control plane binary (default: bin/medmesh, built if missing)")
	flag.StringVar(&c.cpGoMemLimit, "cp-gomemlimit", "900MiB", "GOMEMLIMIT for the control plane process, as a deployment sets it from its container's memory limit (deploy/ does); \"\" for none")
	flag.BoolVar(&c.inProcess, "inprocess", false,
		"diagnostics: run the control plane inside the benchmark (controlplane_* figures then include the proxies)")
	flag.StringVar(&c.cpuProfile, "cpuprofile", "", "with -inprocess: write CPU profiles of the sync and the change phases to FILE.sync and FILE.changes")
	flag.StringVar(&c.memProfile, "memprofile", "", "with -inprocess: write the heap profile with the largest in-use heap seen while proxies sync")
	flag.BoolVar(&c.scale, "scale", false, "edge scale (make bench-scale): configuration scoped by authorization over a call graph, fleets of -steps proxies, then the full-mesh row")
	flag.IntVar(&c.callees, "callees", 10, "with -scale: services each service may call (intentions; PHI services deny every other caller)")
	steps := flag.String("steps", "1000,2000,5000", "with -scale: fleet sizes, one after the other (the cost curve); the last gives the xds_scoped_* figures")
	flag.StringVar(&c.scopeMeta, "scope", "explicit", "with -scale: every service's medmesh-scope meta: explicit (its scope is the services its intentions name: the call graph) or authorized (every default-allow service too: about a third of this catalog is not PHI)")
	flag.IntVar(&c.scaleChanges, "scale-changes", 12, "with -scale: health changes timed per scoped fleet")
	flag.IntVar(&c.fullMeshProxies, "fullmesh-proxies", 1000, "with -scale: proxies of the full-mesh row (0: none)")
	flag.Parse()
	if c.scale {
		var err error
		if c.steps, err = parseSteps(*steps); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		if c.scopeMeta != "explicit" && c.scopeMeta != "authorized" {
			fmt.Fprintf(os.Stderr, "-scope %q: want explicit or authorized\n", c.scopeMeta)
			os.Exit(2)
		}
		if c.inProcess {
			fmt.Fprintln(os.Stderr, "-scale runs the control plane as a child process; -inprocess is not supported with it")
			os.Exit(2)
		}
	}
	if (c.cpuProfile != "" || c.memProfile != "") && !c.inProcess {
		fmt.Fprintln(os.Stderr, "-cpuprofile and -memprofile need -inprocess: the control plane is otherwise another process")
		os.Exit(2)
	}
	if !c.scale && c.proxies > c.services*c.instances {
		fmt.Fprintf(os.Stderr, "-proxies %d exceeds the %d instances a proxy can front\n", c.proxies, c.services*c.instances)
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop() // a second Ctrl-C kills the benchmark without waiting for cleanup
	}()
	var figs []figure
	var err error
	if c.scale {
		debug.SetGCPercent(400) // as run does: the simulator shares the cores
		var rows []stageResult
		figs, rows, err = runScale(ctx, c)
		if len(figs) > 0 {
			reportScale(os.Stdout, c, figs, rows)
		}
	} else {
		figs, err = run(ctx, c)
		figs = labelled(c.label, figs)
		if len(figs) > 0 {
			report(os.Stdout, c, figs)
		}
	}
	if errors.Is(err, context.Canceled) {
		fmt.Fprintln(os.Stderr, "bench/xds: interrupted; child processes stopped")
		os.Exit(130)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench/xds:", err)
		os.Exit(1)
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s  %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

// run performs the benchmark; it returns whatever figures it measured
// before an error, and cleans up every child process it started.
func run(ctx context.Context, c config) (figs []figure, err error) {
	dir, err := os.MkdirTemp("", "medmesh-bench-")
	if err != nil {
		return nil, err
	}
	defer func() {
		if c.keep || err != nil {
			logf("logs kept in %s", dir)
			return
		}
		os.RemoveAll(dir)
	}()
	add := func(f figure) { figs = append(figs, f) }
	if !c.inProcess {
		// The simulated proxies share two cores with the control plane;
		// collecting less often keeps the simulator's GC from stealing
		// the CPU the figures are about. Memory is plentiful here.
		debug.SetGCPercent(400)
	}

	// Consul.
	agent, err := consulagent.New(dir, true)
	if err != nil {
		return nil, err
	}
	if c.consulMaxConns > 0 {
		if agent.Bin, err = consulWrapper(dir, agent.Bin, c.consulMaxConns); err != nil {
			return nil, err
		}
		logf("consul: limits.http_max_conns_per_client = %d", c.consulMaxConns)
	}
	if err := agent.Start(ctx); err != nil {
		return nil, err
	}
	defer agent.Stop()
	consulPid := childPid("consul")
	client := agent.Client()
	syn := newSynthetic(c.services, c.instances)
	logf("consul %s (pid %d): registering %d services x %d instances on %d nodes",
		agent.Addr(), consulPid, c.services, c.instances, syn.nodes)
	start := time.Now()
	if err := syn.register(ctx, client, c.registerWorkers); err != nil {
		return figs, err
	}
	add(figure{name: "consul_register_s", value: time.Since(start).Seconds(), format: "%.2f", unit: "s"})
	logf("registered in %.1fs", time.Since(start).Seconds())

	// Control plane.
	bin := c.medmesh
	if bin == "" {
		if bin, err = findMedmesh(ctx, dir); err != nil {
			return figs, err
		}
	}
	var cp *cpProcess
	if c.inProcess {
		logf("DIAGNOSTIC MODE: control plane in-process; its RSS and CPU figures include the simulated proxies")
		cp, err = startInProcess(agent.Addr(), dir)
	} else {
		if c.cpGoMemLimit != "" {
			logf("control plane GOMEMLIMIT=%s (a soft limit, as in a 1 GiB container; -cp-gomemlimit \"\" for none)", c.cpGoMemLimit)
		}
		cp, err = startControlPlane(bin, agent.Addr(), dir, c.cpGoMemLimit, "", "")
	}
	if err != nil {
		return figs, err
	}
	defer cp.stop()
	start = time.Now()
	if err := cp.waitReady(ctx, 5*time.Minute); err != nil {
		return figs, err
	}
	add(figure{name: "controlplane_ready_s", value: time.Since(start).Seconds(), format: "%.2f", unit: "s"})
	logf("control plane pid %d ready in %.1fs (xds %s, admin %s)", cp.Pid(), time.Since(start).Seconds(), cp.XDSAddr, cp.AdminAddr)

	// Proxies: spread over services, one per instance slot.
	nodes := make([]synthInstance, c.proxies)
	for i := range nodes {
		nodes[i] = syn.instance(i%c.services, (i/c.services)%c.instances)
	}
	before, err := procstat.Read(cp.Pid())
	if err != nil {
		return figs, err
	}
	stopProfile := func() {}
	if c.cpuProfile != "" {
		if stopProfile, err = startCPUProfile(c.cpuProfile + ".sync"); err != nil {
			return figs, err
		}
	}
	start = time.Now()
	fl, err := startFleet(ctx, fleetOptions{XDSAddr: cp.XDSAddr, Conns: c.conns, Starters: c.starters}, nodes, c.services)
	if err != nil {
		return figs, err
	}
	defer fl.stop()
	logf("%d proxies connecting (%d SotW, %d delta)", c.proxies, c.proxies-c.proxies/2, c.proxies/2)
	if err := waitFull(ctx, fl, cp, c.fullTimeout, newHeapSampler(c.memProfile)); err != nil {
		return figs, err
	}
	fullS := fl.fullConfigAt().Sub(start).Seconds()
	add(figure{name: "xds_full_config_s", value: fullS, format: "%.2f", unit: "s"})
	after, err := procstat.Read(cp.Pid())
	if err != nil {
		return figs, err
	}
	add(figure{name: "controlplane_cpu_s_full_config", value: (after.CPU - before.CPU).Seconds(), format: "%.2f", unit: "s"})
	add(figure{name: "controlplane_rss_after_sync_mib", value: after.RSSMiB, format: "%.0f", unit: "MiB"})
	logf("all proxies hold full config after %.1fs; control plane RSS %.0f MiB", fullS, after.RSSMiB)
	figs = append(figs, sentFigures("xds_full_config", fl.received())...)

	// Convergence of endpoint health changes.
	stopProfile()
	if c.cpuProfile != "" {
		if stopProfile, err = startCPUProfile(c.cpuProfile + ".changes"); err != nil {
			return figs, err
		}
		defer stopProfile()
	}
	conv, err := measureChanges(ctx, c, syn, client, fl, cp, consulPid)
	figs = append(figs, conv...)
	if err != nil {
		return figs, err
	}

	end, err := procstat.Read(cp.Pid())
	if err != nil {
		return figs, err
	}
	add(figure{name: "controlplane_peak_rss_mib", value: end.PeakMiB, format: "%.0f", unit: "MiB",
		target: "<= 1024", ok: within(end.PeakMiB, 1024)})
	add(figure{name: "xds_nacks", value: float64(fl.nacks()), format: "%.0f"})
	if self, err := procstat.Read(os.Getpid()); err == nil && !c.inProcess {
		add(figure{name: "bench_peak_rss_mib", value: self.PeakMiB, format: "%.0f", unit: "MiB"})
	}
	if err := fl.failed(); err != nil {
		return figs, err
	}
	if err := cp.alive(); err != nil || !c.restart {
		return figs, err
	}
	if c.inProcess {
		logf("the restart phase needs the control plane as a process of its own; skipped with -inprocess")
		return figs, nil
	}
	rf, cp2, err := measureRestart(ctx, restartPhase{bin: bin, consulAddr: agent.Addr(), dir: dir, goMemLimit: c.cpGoMemLimit,
		nodes: nodes, services: c.services, conns: c.conns, starters: c.starters, timeout: c.fullTimeout}, fl, cp)
	if cp2 != nil {
		defer cp2.stop()
	}
	figs = append(figs, rf...)
	if err != nil {
		return figs, err
	}
	return figs, cp2.alive()
}

// waitFull waits until every proxy holds its full configuration, logging
// progress and failing early if a stream or the control plane dies.
func waitFull(ctx context.Context, fl *fleet, cp *cpProcess, timeout time.Duration, heap *heapSampler) error {
	deadline := time.After(timeout)
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	sample := time.NewTicker(250 * time.Millisecond)
	defer sample.Stop()
	for {
		select {
		case <-sample.C:
			heap.sample()
		case <-fl.fullDone:
			heap.sample()
			return heap.err
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline:
			for _, l := range fl.describeLagging(5) {
				logf("  lagging: %s", l)
			}
			return fmt.Errorf("only %d of %d proxies hold full config after %s", fl.full.Load(), len(fl.proxies), timeout)
		case <-tick.C:
			if err := errors.Join(fl.failed(), cp.alive()); err != nil {
				return err
			}
			st, _ := procstat.Read(cp.Pid())
			logf("  %d/%d proxies hold full config; control plane RSS %.0f MiB, CPU %.1fs",
				fl.full.Load(), len(fl.proxies), st.RSSMiB, st.CPU.Seconds())
		}
	}
}

// measureChanges flips instances to critical and back, one change at a
// time, and times each delivery to each proxy.
func measureChanges(ctx context.Context, c config, syn *synthetic, client *api.Client, fl *fleet, cp *cpProcess, consulPid int) ([]figure, error) {
	cpPid := cp.Pid()
	stagesBefore, err := scrapeStages(ctx, cp.AdminAddr)
	if err != nil {
		return nil, fmt.Errorf("reading the control plane's stage metrics: %w", err)
	}
	var probe *consulProbe
	if c.stages {
		if probe, err = newConsulProbe(ctx, client, c.services); err != nil {
			return nil, err
		}
	}
	rng := rand.New(rand.NewPCG(c.seed, 0))
	var all, perChange []time.Duration
	missed := 0
	var target synthInstance
	cpBefore, err := procstat.Read(cpPid)
	if err != nil {
		return nil, err
	}
	consulBefore, _ := procstat.Read(consulPid)
	selfBefore, _ := procstat.Read(os.Getpid())
	for k := 0; k < c.changes; k++ {
		status, present := api.HealthCritical, false
		if k%2 == 0 {
			target = syn.instance(rng.IntN(c.services), rng.IntN(c.instances))
		} else {
			status, present = api.HealthPassing, true
		}
		if probe != nil {
			if err := probe.arm(ctx, target.service); err != nil {
				return nil, fmt.Errorf("arming the Consul probe: %w", err)
			}
		}
		ch := fl.begin(target.service, net.JoinHostPort(target.addr, strconv.Itoa(target.port)), present)
		if err := setHealth(ctx, client, target, status); err != nil {
			return nil, fmt.Errorf("setting %s %s: %w", target.id, status, err)
		}
		probe.wait(ch.t0, time.Now())
		timedOut := false
		select {
		case <-ch.done:
		case <-time.After(c.changeTimeout):
			timedOut = true
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		lat, miss := fl.end(ch)
		missed += miss
		if timedOut {
			logf("  change %d/%d: %s -> %s: %d proxies did not converge within %s", k+1, c.changes, target.id, status, miss, c.changeTimeout)
			if err := fl.failed(); err != nil {
				return nil, err
			}
			// A delivery that never came counts as the timeout, so a
			// stuck proxy raises the percentiles instead of vanishing.
			for range miss {
				lat = append(lat, c.changeTimeout)
			}
			all = append(all, lat...)
			perChange = append(perChange, c.changeTimeout)
		} else {
			all = append(all, lat...)
			slowest := percentile(lat, 100)
			perChange = append(perChange, slowest)
			logf("  change %d/%d: %s -> %s: p50 %.0f ms, all %d proxies %.0f ms",
				k+1, c.changes, target.id, status, ms(percentile(lat, 50)), len(lat), ms(slowest))
		}
		select {
		case <-time.After(c.gap):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	cpAfter, err := procstat.Read(cpPid)
	if err != nil {
		return nil, err
	}
	consulAfter, _ := procstat.Read(consulPid)
	selfAfter, _ := procstat.Read(os.Getpid())
	stagesAfter, err := scrapeStages(ctx, cp.AdminAddr)
	if err != nil {
		return nil, fmt.Errorf("reading the control plane's stage metrics: %w", err)
	}
	stages := stageFigures(stagesBefore, stagesAfter, probe, all, c.changes)
	n := float64(max(c.changes, 1))
	p99 := ms(percentile(all, 99))
	return append(stages, []figure{
		{name: "xds_convergence_p50_ms", value: ms(percentile(all, 50)), format: "%.1f", unit: "ms"},
		{name: "xds_convergence_p99_ms", value: p99, format: "%.1f", unit: "ms", target: "<= 1000", ok: within(p99, 1000)},
		{name: "xds_convergence_max_ms", value: ms(percentile(all, 100)), format: "%.1f", unit: "ms"},
		{name: "xds_convergence_all_p50_ms", value: ms(percentile(perChange, 50)), format: "%.1f", unit: "ms"},
		{name: "xds_convergence_all_p99_ms", value: ms(percentile(perChange, 99)), format: "%.1f", unit: "ms"},
		{name: "xds_convergence_missed", value: float64(missed), format: "%.0f", target: "0", ok: within(float64(missed), 0)},
		{name: "controlplane_cpu_s_per_change", value: (cpAfter.CPU - cpBefore.CPU).Seconds() / n, format: "%.3f", unit: "s"},
		{name: "consul_cpu_s_per_change", value: (consulAfter.CPU - consulBefore.CPU).Seconds() / n, format: "%.3f", unit: "s"},
		{name: "bench_cpu_s_per_change", value: (selfAfter.CPU - selfBefore.CPU).Seconds() / n, format: "%.3f", unit: "s"},
	}...), nil
}

func report(w io.Writer, c config, figs []figure) {
	fmt.Fprintf(w, "\nmedmesh xDS benchmark: %d services x %d instances, %d proxies (%d SotW, %d delta), %d changes, %d CPUs\n",
		c.services, c.instances, c.proxies, c.proxies-c.proxies/2, c.proxies/2, c.changes, runtime.NumCPU())
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "figure\tvalue\tunit\ttarget\t")
	for _, f := range figs {
		verdict := ""
		if f.ok != nil {
			verdict = "ok"
			if !*f.ok {
				verdict = "MISSED"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s %s\t\n", f.name, f.valueString(), f.unit, f.target, verdict)
	}
	tw.Flush()
	fmt.Fprintln(w)
	for _, f := range figs {
		fmt.Fprintf(w, "BENCH %s=%s\n", f.name, f.valueString())
	}
}

// labelled names the figures of a labelled scenario: convergence figures
// as xds_convergence_<label>_*, the rest prefixed with the label.
func labelled(label string, figs []figure) []figure {
	if label == "" {
		return figs
	}
	out := make([]figure, len(figs))
	for i, f := range figs {
		if rest, ok := strings.CutPrefix(f.name, "xds_convergence_"); ok {
			f.name = "xds_convergence_" + label + "_" + rest
		} else {
			f.name = label + "_" + f.name
		}
		out[i] = f
	}
	return out
}

// consulWrapper writes a script that runs Consul with a higher per-client
// HTTP connection limit. consulagent's flags are fixed, and the control
// plane holds one blocking query (one HTTP connection) per service, so a
// thousand services exceed Consul's default of 200 connections per client
// address. exec keeps the agent's pid the script's. Where util-linux's
// setpriv exists, the agent also dies with the benchmark if the benchmark
// is killed outright, as the control plane does.
func consulWrapper(dir, bin string, maxConns int) (string, error) {
	path := filepath.Join(dir, "consul-wrapper.sh")
	prefix := ""
	if sp, err := exec.LookPath("setpriv"); err == nil {
		prefix = fmt.Sprintf("%q --pdeathsig KILL ", sp)
	}
	script := fmt.Sprintf("#!/bin/sh\nexec %s%q \"$@\" -hcl 'limits { http_max_conns_per_client = %d }'\n", prefix, bin, maxConns)
	return path, os.WriteFile(path, []byte(script), 0o755)
}
