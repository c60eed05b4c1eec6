// Command residency measures what PHI residency costs one site's control
// plane: the flows it decides are its own services calling every service
// of every site (simulated: 100 sites x 50 services, every second one
// PHI, so 50 x 5,000 = 250,000 flows), under the default Rego policy.
//
//  1. full evaluation: every flow with a cold memo (a control plane
//     starting, or the policy file changing);
//  2. per change: one remote service changes (its PHI flag flips, or it
//     moves to another site) and the site re-decides all its flows, as a
//     round does after a catalog change; only the flows whose input
//     changed are evaluated, the rest come from the memo. Median of
//     several changes.
//
// It prints BENCH lines for `make bench`.
package main

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"time"

	"medmesh/controlplane/residency"
)

var kinds = []string{"emr", "his", "imaging", "vitals", "webrtc", "generic"}

// service is one service of the simulated network.
type service struct {
	name, site, kind string
	phi              bool
}

func main() {
	sites := flag.Int("sites", 100, "sites in the network (the first is the hub)")
	services := flag.Int("services", 50, "services per site, every second one PHI")
	changes := flag.Int("changes", 21, "remote service changes to time (median reported)")
	flag.Parse()
	if *sites < 2 || *services < 1 || *changes < 1 {
		fmt.Fprintln(os.Stderr, "residency bench: need -sites >= 2, -services >= 1, -changes >= 1")
		os.Exit(2)
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		// Timings on a shared machine follow its load; say what it was.
		fmt.Printf("load average at start: %s", b)
	}

	siteNames := make([]string, *sites)
	siteNames[0] = "hub"
	for i := 1; i < *sites; i++ {
		siteNames[i] = fmt.Sprintf("site-%03d", i)
	}
	local := siteNames[1]
	var network []service
	for _, site := range siteNames {
		for j := range *services {
			network = append(network, service{
				name: fmt.Sprintf("svc-%02d", j), site: site, kind: kinds[j%len(kinds)], phi: j%2 == 0,
			})
		}
	}
	var callers []residency.Source
	for _, s := range network {
		if s.site == local {
			callers = append(callers, residency.Source{Service: s.name, Namespace: "default", Site: local})
		}
	}

	d := residency.NewDecider(nil)
	flows := flowsOf(callers, network)
	start := time.Now()
	decisions := d.Decide(flows)
	full := time.Since(start)
	allowed := 0
	for _, dec := range decisions {
		if dec.Allowed {
			allowed++
		}
	}
	fmt.Printf("%d sites x %d services; site %s decides %d flows (%d allowed) with the default policy\n",
		*sites, *services, local, len(flows), allowed)
	fmt.Printf("full evaluation, cold memo: %v (%.1f us per flow)\n", full.Round(time.Millisecond),
		float64(full.Microseconds())/float64(len(flows)))

	rng := rand.New(rand.NewPCG(1, 2))
	var perChange []time.Duration
	var evals []uint64
	for i := range *changes {
		// A remote service: one not at the local site.
		k := rng.IntN(len(network))
		for network[k].site == local {
			k = rng.IntN(len(network))
		}
		if i%2 == 0 {
			network[k].phi = !network[k].phi
		} else {
			network[k].site = siteNames[rng.IntN(len(siteNames))]
		}
		flows = flowsOf(callers, network)
		before := d.Stats().Evaluations
		start := time.Now()
		d.Decide(flows)
		perChange = append(perChange, time.Since(start))
		evals = append(evals, d.Stats().Evaluations-before)
	}
	slices.Sort(perChange)
	slices.Sort(evals)
	med := perChange[len(perChange)/2]
	st := d.Stats()
	fmt.Printf("per remote change (median of %d): %v re-deciding every flow, %d evaluated, the rest from the memo\n",
		*changes, med.Round(10*time.Microsecond), evals[len(evals)/2])

	fmt.Printf("BENCH residency_flows=%d\n", len(flows))
	fmt.Printf("BENCH residency_full_eval_ms=%.1f\n", ms(full))
	fmt.Printf("BENCH residency_eval_ms_per_change=%.2f\n", ms(med))
	fmt.Printf("BENCH residency_evaluations_per_change=%d\n", evals[len(evals)/2])
	fmt.Printf("BENCH residency_memo_entries=%d\n", st.MemoEntries)
}

// flowsOf is every caller calling every service of the network, as a
// round builds them from the catalog.
func flowsOf(callers []residency.Source, network []service) []residency.Flow {
	flows := make([]residency.Flow, 0, len(callers)*len(network))
	for _, c := range callers {
		for _, s := range network {
			flows = append(flows, residency.Flow{
				Source:      c,
				Destination: residency.Destination{Service: s.name, Namespace: "default", Site: s.site, PHI: s.phi, Kind: s.kind},
			})
		}
	}
	return flows
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
