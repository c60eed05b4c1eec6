package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"text/tabwriter"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"medmesh/registry"
)

// The per-stage breakdown of a change's latency. The control plane times
// its own stages (medmesh_change_stage_seconds, scraped from /metrics
// before and after the changes); the benchmark times Consul's part with a
// blocking query of its own, the same the control plane's watch holds
// (-stages; at hospital scale each answer is every check in the
// registry, so it is off there by default). What is left of the
// end-to-end time is delivery: the streams, the loopback, the proxies'
// decoding.

// stageOrder is the order stages happen in (controlplane/stages.go).
var stageOrder = []string{"registry", "queue", "build", "publish"}

// stageSums are a scrape of the histogram: sum and count by stage.
type stageSums map[string][2]float64

func scrapeStages(ctx context.Context, adminAddr string) (stageSums, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+adminAddr+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	out := stageSums{}
	if ms := fams["medmesh_reconcile_seconds"].GetMetric(); len(ms) == 1 {
		out["rounds"] = [2]float64{ms[0].GetHistogram().GetSampleSum(), float64(ms[0].GetHistogram().GetSampleCount())}
	}
	if ms := fams["medmesh_catalog_changes_total"].GetMetric(); len(ms) == 1 {
		out["catalogs"] = [2]float64{0, ms[0].GetCounter().GetValue()}
	}
	for _, m := range fams["medmesh_change_stage_seconds"].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "stage" {
				out[l.GetValue()] = [2]float64{m.GetHistogram().GetSampleSum(), float64(m.GetHistogram().GetSampleCount())}
			}
		}
	}
	return out, nil
}

// consulProbe times Consul's part of each change: from the write to the
// answer of a blocking query like the one the control plane holds for
// it: on the changed service's health while the control plane follows
// each service with a query of its own (registry.DefaultServiceWatches),
// else on every check.
type consulProbe struct {
	client     *api.Client
	perService bool
	index      uint64
	done       chan time.Time
	waits      []time.Duration
	writes     []time.Duration // the write alone, until Consul answered it
}

func newConsulProbe(ctx context.Context, c *api.Client, services int) (*consulProbe, error) {
	p := &consulProbe{client: c, perService: services <= registry.DefaultServiceWatches}
	if p.perService {
		return p, nil
	}
	_, meta, err := c.Health().State(api.HealthAny, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, err
	}
	p.index = meta.LastIndex
	return p, nil
}

// arm starts the blocking query for a change of service; call it before
// the write.
func (p *consulProbe) arm(ctx context.Context, service string) error {
	p.done = make(chan time.Time, 1)
	if p.perService {
		// The service's current index first, so the query blocks.
		_, meta, err := p.client.Health().Service(service, "", false, (&api.QueryOptions{}).WithContext(ctx))
		if err != nil {
			return err
		}
		go func(done chan time.Time, index uint64) {
			p.client.Health().Service(service, "", false, (&api.QueryOptions{WaitIndex: index, WaitTime: time.Minute}).WithContext(ctx))
			done <- time.Now()
		}(p.done, meta.LastIndex)
		return nil
	}
	go func(done chan time.Time) {
		_, meta, err := p.client.Health().State(api.HealthAny, (&api.QueryOptions{WaitIndex: p.index, WaitTime: time.Minute}).WithContext(ctx))
		if err == nil {
			p.index = meta.LastIndex
		}
		done <- time.Now()
	}(p.done)
	return nil
}

// wait records how long after t0 the query was answered, and how long
// the write itself took (written: when Consul answered it).
func (p *consulProbe) wait(t0, written time.Time) {
	if p == nil || p.done == nil {
		return
	}
	p.writes = append(p.writes, written.Sub(t0))
	p.waits = append(p.waits, (<-p.done).Sub(t0))
	p.done = nil
}

// stageFigures turns the scrapes and the end-to-end latencies into the
// breakdown (mean ms per stage of a change) and prints it as a table.
func stageFigures(before, after stageSums, probe *consulProbe, all []time.Duration, changes int) []figure {
	figs := []figure{
		{name: "controlplane_rounds_per_change", value: (after["rounds"][1] - before["rounds"][1]) / float64(max(changes, 1)), format: "%.2f"},
		{name: "controlplane_catalogs_per_change", value: (after["catalogs"][1] - before["catalogs"][1]) / float64(max(changes, 1)), format: "%.2f"},
	}
	var e2e float64
	for _, d := range all {
		e2e += ms(d)
	}
	if len(all) > 0 {
		e2e /= float64(len(all))
	}
	rows := [][2]string{}
	accounted := 0.0
	add := func(stage string, v float64) {
		accounted += v
		figs = append(figs, figure{name: "xds_stage_" + stage + "_ms", value: v, format: "%.1f", unit: "ms"})
		rows = append(rows, [2]string{stage, fmt.Sprintf("%.1f", v)})
	}
	if probe != nil && len(probe.waits) > 0 {
		add("consul", ms(mean(probe.waits)))
	}
	for _, s := range stageOrder {
		n := after[s][1] - before[s][1]
		if n <= 0 {
			continue
		}
		add(s, (after[s][0]-before[s][0])/n*1000)
	}
	if probe != nil && len(probe.waits) > 0 {
		add("delivery", max(e2e-accounted, 0))
		w := ms(mean(probe.writes))
		figs = append(figs, figure{name: "xds_stage_consul_write_ms", value: w, format: "%.1f", unit: "ms"})
		rows = append(rows, [2]string{"(of consul: the write until answered)", fmt.Sprintf("%.1f", w)})
	}
	tw := tabwriter.NewWriter(os.Stderr, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "stage of a change\tmean ms\tshare\t")
	for _, r := range rows {
		var v float64
		fmt.Sscan(r[1], &v)
		fmt.Fprintf(tw, "%s\t%s\t%.0f%%\t\n", r[0], r[1], 100*v/max(e2e, 1e-9))
	}
	fmt.Fprintf(tw, "end to end (mean over proxies)\t%.1f\t100%%\t\n", e2e)
	tw.Flush()
	return figs
}

func mean(d []time.Duration) time.Duration {
	var sum time.Duration
	for _, x := range d {
		sum += x
	}
	return sum / time.Duration(max(len(d), 1))
}
