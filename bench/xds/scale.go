package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/hashicorp/consul/api"

	"medmesh/internal/consulagent"
	"medmesh/internal/procstat"
	"medmesh/registry"
)

// Edge scale (`make bench-scale`, issue 14): the same synthetic catalog
// with a call graph in Consul intentions (each service may call about
// -callees others; PHI services deny every other caller), a control plane
// with mTLS and authorization on, so each proxy is sent only its
// service's scope, and fleets of growing size (-steps, half SotW, half
// delta) connected one after the other to the same control plane: the
// cost curve. The last step gives the xds_scoped_* headline figures.
// Then the control plane is restarted in plaintext (no authorization:
// every proxy gets every service) for the full-mesh row, 1,000 proxies,
// whose figures keep the names `make bench` always printed.

// callGraph is who may call whom: callees by service index.
type callGraph struct {
	callees [][]int
	phi     []bool
}

// newCallGraph draws each service's callees at random (seeded), never
// itself.
func newCallGraph(syn *synthetic, callees int, seed uint64) *callGraph {
	rng := rand.New(rand.NewPCG(seed, 14))
	n := len(syn.services)
	g := &callGraph{callees: make([][]int, n), phi: make([]bool, n)}
	for i, s := range syn.services {
		set, _ := registry.ParseMeta(s.name, "", s.meta, nil)
		g.phi[i] = set.PHI
		seen := map[int]bool{i: true}
		for len(g.callees[i]) < min(callees, n-1) {
			j := rng.IntN(n)
			if !seen[j] {
				seen[j] = true
				g.callees[i] = append(g.callees[i], j)
			}
		}
	}
	return g
}

// scopes are, by service name, the services its proxies should be sent
// (the control plane's rule, ir/scope.go): the services an intention lets
// it call and, unless explicit (medmesh-scope=explicit), every
// default-allow (non-PHI) service.
func (g *callGraph) scopes(syn *synthetic, explicit bool) map[string]map[string]bool {
	open := map[string]bool{}
	for i, s := range syn.services {
		if !g.phi[i] && !explicit {
			open[s.name] = true
		}
	}
	out := make(map[string]map[string]bool, len(syn.services))
	for i, s := range syn.services {
		sc := make(map[string]bool, len(open)+len(g.callees[i]))
		for n := range open {
			sc[n] = true
		}
		for _, j := range g.callees[i] {
			sc[syn.services[j].name] = true
		}
		out[s.name] = sc
	}
	return out
}

// writeIntentions writes one service-intentions config entry per callee
// naming its callers, with a pool of workers.
func (g *callGraph) writeIntentions(ctx context.Context, c *api.Client, syn *synthetic, workers int) error {
	callers := make([][]string, len(syn.services))
	for i, cs := range g.callees {
		for _, j := range cs {
			callers[j] = append(callers[j], syn.services[i].name)
		}
	}
	jobs := make(chan int)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				e := &api.ServiceIntentionsConfigEntry{Kind: api.ServiceIntentions, Name: syn.services[j].name}
				for _, src := range callers[j] {
					e.Sources = append(e.Sources, &api.SourceIntention{Name: src, Action: api.IntentionActionAllow})
				}
				if _, _, err := c.ConfigEntries().Set(e, (&api.WriteOptions{}).WithContext(ctx)); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("intentions for %s: %w", syn.services[j].name, err)
					}
					mu.Unlock()
				}
			}
		}()
	}
	for j := range syn.services {
		if len(callers[j]) > 0 {
			jobs <- j
		}
	}
	close(jobs)
	wg.Wait()
	return firstErr
}

// stageResult is one fleet's figures.
type stageResult struct {
	kind                  string // scoped or full mesh
	proxies               int
	fullS, rssSyncMiB     float64
	peakMiB, cpuPerChange float64
	p50, p99              float64
	meanScope             float64
	missed                float64
	figs                  []figure
	restartFigs           []figure // with a restart phase (the last fleet)
}

// runScale runs the edge-scale benchmark; see the comment at the top.
func runScale(ctx context.Context, c config) (figs []figure, rows []stageResult, err error) {
	dir, err := os.MkdirTemp("", "medmesh-bench-scale-")
	if err != nil {
		return nil, nil, err
	}
	defer func() {
		if c.keep || err != nil {
			logf("logs kept in %s", dir)
			return
		}
		os.RemoveAll(dir)
	}()
	add := func(f figure) { figs = append(figs, f) }
	agent, err := consulagent.New(dir, true)
	if err != nil {
		return nil, nil, err
	}
	if err := agent.Start(ctx); err != nil {
		return nil, nil, err
	}
	defer agent.Stop()
	consulPid := childPid("consul")
	client := agent.Client()
	syn := newSynthetic(c.services, c.instances)
	explicit := c.scopeMeta == registry.ScopeExplicit
	for i := range syn.services {
		syn.services[i].meta[registry.MetaScope] = c.scopeMeta
	}
	logf("consul %s: registering %d services x %d instances", agent.Addr(), c.services, c.instances)
	start := time.Now()
	if err := syn.register(ctx, client, c.registerWorkers); err != nil {
		return figs, nil, err
	}
	add(figure{name: "consul_register_s", value: time.Since(start).Seconds(), format: "%.2f", unit: "s"})
	graph := newCallGraph(syn, c.callees, c.seed)
	start = time.Now()
	if err := graph.writeIntentions(ctx, client, syn, c.registerWorkers); err != nil {
		return figs, nil, err
	}
	scopes := graph.scopes(syn, explicit)
	logf("intentions written in %.1fs: each service may call %d others; %d of %d services are PHI (default deny); every service's %s=%s",
		time.Since(start).Seconds(), c.callees, countTrue(graph.phi), len(graph.phi), registry.MetaScope, c.scopeMeta)
	bin := c.medmesh
	if bin == "" {
		if bin, err = findMedmesh(ctx, dir); err != nil {
			return figs, nil, err
		}
	}

	// Scoped: mTLS and authorization on, fleets of growing size.
	cp, err := startControlPlane(bin, agent.Addr(), dir, c.cpGoMemLimit, "scoped", filepath.Join(dir, "state"))
	if err != nil {
		return figs, nil, err
	}
	defer cp.stop()
	if err := cp.waitReady(ctx, 5*time.Minute); err != nil {
		return figs, nil, err
	}
	sc := c
	sc.changes = c.scaleChanges
	for i, n := range c.steps {
		if n > c.services*c.instances {
			return figs, rows, fmt.Errorf("-steps %d exceeds the %d instances a proxy can front", n, c.services*c.instances)
		}
		var restart *restartPhase
		if i == len(c.steps)-1 && c.restart {
			// The largest fleet ends by restarting the control plane
			// under it (xds_restart_*).
			restart = &restartPhase{bin: bin, consulAddr: agent.Addr(), dir: dir, goMemLimit: c.cpGoMemLimit,
				name: "scoped-restarted", mtlsStateDir: filepath.Join(dir, "state"), scopes: scopes}
		}
		res, err := runStage(ctx, sc, syn, client, cp, consulPid, n, scopes, restart)
		if err != nil {
			return figs, rows, err
		}
		rows = append(rows, res)
		add(figure{name: fmt.Sprintf("xds_scoped_rss_after_sync_mib_%d", n), value: res.rssSyncMiB, format: "%.0f", unit: "MiB"})
		add(figure{name: fmt.Sprintf("xds_scoped_cpu_s_per_change_%d", n), value: res.cpuPerChange, format: "%.3f", unit: "s"})
		add(figure{name: fmt.Sprintf("xds_scoped_full_config_s_%d", n), value: res.fullS, format: "%.2f", unit: "s"})
	}
	cp.stop()
	if len(rows) > 0 {
		last := rows[len(rows)-1]
		add(figure{name: "xds_scoped_proxies", value: float64(last.proxies), format: "%.0f"})
		add(figure{name: "xds_scoped_mean_scope_services", value: last.meanScope, format: "%.0f"})
		add(figure{name: "xds_scoped_full_config_s", value: last.fullS, format: "%.2f", unit: "s", target: "<= 30", ok: within(last.fullS, 30)})
		add(figure{name: "xds_scoped_convergence_p50_ms", value: last.p50, format: "%.1f", unit: "ms"})
		add(figure{name: "xds_scoped_convergence_p99_ms", value: last.p99, format: "%.1f", unit: "ms", target: "<= 1000", ok: within(last.p99, 1000)})
		figs = append(figs, last.restartFigs...)
		add(figure{name: "xds_scoped_peak_rss_mib", value: last.peakMiB, format: "%.0f", unit: "MiB", target: "<= 1024", ok: within(last.peakMiB, 1024)})
		add(figure{name: "xds_scoped_cpu_s_per_change", value: last.cpuPerChange, format: "%.3f", unit: "s"})
		add(figure{name: "xds_scoped_convergence_missed", value: last.missed, format: "%.0f", target: "0", ok: within(last.missed, 0)})
	}

	// Full mesh: plaintext, no authorization: every proxy gets every
	// service, as `make bench` has always measured it.
	if c.fullMeshProxies > 0 {
		if explicit {
			// Narrowing holds without mTLS too: register the services
			// again without it, before the plaintext control plane starts.
			start := time.Now()
			for i := range syn.services {
				delete(syn.services[i].meta, registry.MetaScope)
			}
			if err := syn.register(ctx, client, c.registerWorkers); err != nil {
				return figs, rows, err
			}
			logf("full mesh: services registered again without %s in %.1fs", registry.MetaScope, time.Since(start).Seconds())
		}
		cp2, err := startControlPlane(bin, agent.Addr(), dir, c.cpGoMemLimit, "fullmesh", "")
		if err != nil {
			return figs, rows, err
		}
		defer cp2.stop()
		if err := cp2.waitReady(ctx, 5*time.Minute); err != nil {
			return figs, rows, err
		}
		res, err := runStage(ctx, c, syn, client, cp2, consulPid, c.fullMeshProxies, nil, nil)
		if err != nil {
			return figs, rows, err
		}
		rows = append(rows, res)
		add(figure{name: "xds_full_config_s", value: res.fullS, format: "%.2f", unit: "s"})
		figs = append(figs, res.figs...)
		add(figure{name: "controlplane_rss_after_sync_mib", value: res.rssSyncMiB, format: "%.0f", unit: "MiB"})
		add(figure{name: "controlplane_peak_rss_mib", value: res.peakMiB, format: "%.0f", unit: "MiB", target: "<= 1024", ok: within(res.peakMiB, 1024)})
	}
	return figs, rows, nil
}

// runStage connects n proxies (nodes 0..n-1) to a running control plane,
// waits for their full configuration, times c.changes health changes and
// disconnects them, waiting until the control plane has let them go.
// With restart, the control plane is instead restarted under the fleet
// (measureRestart), which stops both.
func runStage(ctx context.Context, c config, syn *synthetic, client *api.Client, cp *cpProcess, consulPid, n int,
	scopes map[string]map[string]bool, restart *restartPhase) (stageResult, error) {
	res := stageResult{proxies: n, kind: "scoped"}
	nodes := make([]synthInstance, n)
	total := 0
	for i := range nodes {
		nodes[i] = syn.instance(i%c.services, (i/c.services)%c.instances)
		if scopes != nil {
			total += len(scopes[nodes[i].service])
		} else {
			total += c.services
		}
	}
	res.meanScope = float64(total) / float64(n)
	if scopes == nil {
		res.kind = "full mesh"
	}
	kind := res.kind
	before, err := procstat.Read(cp.Pid())
	if err != nil {
		return res, err
	}
	start := time.Now()
	fl, err := startFleet(ctx, fleetOptions{XDSAddr: cp.XDSAddr, Conns: c.conns, Starters: c.starters, Scopes: scopes}, nodes, c.services)
	if err != nil {
		return res, err
	}
	defer fl.stop()
	logf("%s: %d proxies connecting (%d SotW, %d delta), %.0f services each on average", kind, n, n-n/2, n/2, res.meanScope)
	if err := waitFull(ctx, fl, cp, c.fullTimeout, newHeapSampler("")); err != nil {
		return res, err
	}
	res.fullS = fl.fullConfigAt().Sub(start).Seconds()
	after, err := procstat.Read(cp.Pid())
	if err != nil {
		return res, err
	}
	res.rssSyncMiB = after.RSSMiB
	logf("%s: all %d proxies hold their configuration after %.1fs; control plane RSS %.0f MiB, CPU %.1fs",
		kind, n, res.fullS, after.RSSMiB, (after.CPU - before.CPU).Seconds())
	conv, err := measureChanges(ctx, c, syn, client, fl, cp, consulPid)
	if err != nil {
		return res, err
	}
	res.figs = conv
	for _, f := range conv {
		switch f.name {
		case "xds_convergence_p50_ms":
			res.p50 = f.value
		case "xds_convergence_p99_ms":
			res.p99 = f.value
		case "controlplane_cpu_s_per_change":
			res.cpuPerChange = f.value
		case "xds_convergence_missed":
			res.missed = f.value
		}
	}
	end, err := procstat.Read(cp.Pid())
	if err != nil {
		return res, err
	}
	res.peakMiB = end.PeakMiB
	if err := fl.failed(); err != nil {
		return res, err
	}
	if restart != nil {
		ph := *restart
		ph.nodes, ph.services, ph.conns, ph.starters, ph.timeout = nodes, c.services, c.conns, c.starters, c.fullTimeout
		rf, cp2, err := measureRestart(ctx, ph, fl, cp)
		if cp2 != nil {
			cp2.stop()
		}
		res.restartFigs = rf
		return res, err
	}
	fl.stop()
	return res, waitDisconnected(ctx, cp)
}

// waitDisconnected polls the control plane's metrics until no proxy is
// connected, so the next fleet starts from a quiet control plane.
func waitDisconnected(ctx context.Context, cp *cpProcess) error {
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		if n, err := connectedProxies(ctx, cp); err == nil && n == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond): // polling interval
		}
	}
	return fmt.Errorf("proxies still connected to the control plane 2 minutes after their fleet stopped (log: %s)", cp.LogPath)
}

func connectedProxies(ctx context.Context, cp *cpProcess) (float64, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+cp.AdminAddr+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "medmesh_xds_connected_proxies "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, fmt.Errorf("no medmesh_xds_connected_proxies in /metrics")
}

func countTrue(bs []bool) int {
	n := 0
	for _, b := range bs {
		if b {
			n++
		}
	}
	return n
}

// reportScale prints the cost curve and the two rows, then every figure.
func reportScale(w io.Writer, c config, figs []figure, rows []stageResult) {
	fmt.Fprintf(w, "\nmedmesh xDS edge-scale benchmark: %d services x %d instances, each service may call %d others (%s=%s), %d CPUs (noisy when other work shares the machine)\n",
		c.services, c.instances, c.callees, registry.MetaScope, c.scopeMeta, runtime.NumCPU())
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "config\tproxies\tservices/proxy\tfull config s\tp50 ms\tp99 ms\tRSS after sync MiB\tpeak RSS MiB\tCPU s/change\t")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%d\t%.0f\t%.2f\t%.1f\t%.1f\t%.0f\t%.0f\t%.3f\t\n", r.kind, r.proxies, r.meanScope, r.fullS, r.p50, r.p99, r.rssSyncMiB, r.peakMiB, r.cpuPerChange)
	}
	tw.Flush()
	c.proxies = c.steps[len(c.steps)-1]
	report(w, c, figs)
}

func parseSteps(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("-steps %q: want positive proxy counts separated by commas", s)
		}
		out = append(out, n)
	}
	if !slices.IsSorted(out) {
		return nil, fmt.Errorf("-steps %q: want increasing counts (the last is the headline)", s)
	}
	return out, nil
}
