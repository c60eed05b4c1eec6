// Package metricstest reads what a Prometheus registry exposes, for
// tests: one series' value, a histogram's count and sum, whether a family
// is present, and promlint's verdict on names, help texts and units.
package metricstest

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
)

// Lint fails the test on every problem promlint (client_golang's
// testutil.GatherAndLint) finds in what g exposes.
func Lint(t testing.TB, g prometheus.Gatherer) {
	t.Helper()
	problems, err := testutil.GatherAndLint(g)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}

// Find returns the series of family name whose label values, in the
// order of their label names and joined with ",", are labels ("" for a
// series without labels).
func Find(t testing.TB, g prometheus.Gatherer, name, labels string) []*dto.Metric {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []*dto.Metric
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			vals := make([]string, 0, len(m.GetLabel()))
			for _, l := range m.GetLabel() {
				vals = append(vals, l.GetValue())
			}
			if strings.Join(vals, ",") == labels {
				out = append(out, m)
			}
		}
	}
	return out
}

// Has reports whether g exposes a family called name.
func Has(t testing.TB, g prometheus.Gatherer, name string) bool {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return true
		}
	}
	return false
}

// Value is the value of one gauge or counter series; it fails the test
// unless exactly one series matches.
func Value(t testing.TB, g prometheus.Gatherer, name, labels string) float64 {
	t.Helper()
	ms := Find(t, g, name, labels)
	if len(ms) != 1 {
		t.Fatalf("%s{%s}: %d series, want 1", name, labels, len(ms))
	}
	if gg := ms[0].GetGauge(); gg != nil {
		return gg.GetValue()
	}
	return ms[0].GetCounter().GetValue()
}

// Histogram is one histogram series' sample count and sum.
func Histogram(t testing.TB, g prometheus.Gatherer, name, labels string) (uint64, float64) {
	t.Helper()
	ms := Find(t, g, name, labels)
	if len(ms) != 1 {
		t.Fatalf("%s{%s}: %d series, want 1", name, labels, len(ms))
	}
	return ms[0].GetHistogram().GetSampleCount(), ms[0].GetHistogram().GetSampleSum()
}
