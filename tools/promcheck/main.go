// Command promcheck checks medmesh's Prometheus alert rules and Grafana
// dashboard with Prometheus's own code: the PrometheusRule's groups with
// the rule parser Prometheus loads rule files with (model/rulefmt, which
// also parses every expression and annotation template), every dashboard
// expression with the PromQL parser, and every metric name either uses
// against the list of names medmesh exports (made by deploy/monitoring's
// test from the real registries). Alerts must carry a severity and a
// summary, description and runbook annotation, and the runbook section
// must exist. Its own test (fire_test.go) evaluates each alert against
// series that must make it fire.
//
// It is a module of its own: github.com/prometheus/prometheus would pull
// some hundred modules (cloud SDKs for service discovery, a newer
// client-go) into medmesh's go.mod for a check that only tests need.
//
//	promcheck -rules deploy/monitoring/prometheusrule.yaml \
//	  -dashboard deploy/monitoring/dashboard.json -metrics names.txt -root .
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	"go.yaml.in/yaml/v3"
)

func main() {
	rules := flag.String("rules", "", "PrometheusRule YAML file")
	dashboard := flag.String("dashboard", "", "Grafana dashboard JSON file")
	metrics := flag.String("metrics", "", "file of exported metric names, one a line")
	root := flag.String("root", ".", "repository root, where runbook paths start")
	flag.Parse()
	if *rules == "" || *dashboard == "" || *metrics == "" {
		fmt.Fprintln(os.Stderr, "usage: promcheck -rules FILE -dashboard FILE -metrics FILE [-root DIR]")
		os.Exit(2)
	}
	errs := check(*rules, *dashboard, *metrics, *root)
	for _, err := range errs {
		fmt.Fprintln(os.Stderr, err)
	}
	if len(errs) > 0 {
		os.Exit(1)
	}
	fmt.Println("promcheck: rules and dashboard OK")
}

var promql = parser.NewParser(parser.Options{})

func check(rulesPath, dashPath, metricsPath, root string) []error {
	exported, err := readNames(metricsPath)
	if err != nil {
		return []error{err}
	}
	var errs []error
	groups, rerrs := loadRules(rulesPath)
	errs = append(errs, rerrs...)
	if groups != nil {
		for _, g := range groups.Groups {
			for _, r := range g.Rules {
				what := fmt.Sprintf("%s: group %s, rule %s%s", rulesPath, g.Name, r.Alert, r.Record)
				errs = append(errs, checkAlert(what, r, root)...)
				errs = append(errs, checkNames(what, r.Expr, exported)...)
			}
		}
	}
	exprs, err := dashboardExprs(dashPath)
	if err != nil {
		return append(errs, err)
	}
	for _, e := range exprs {
		errs = append(errs, checkNames(dashPath+": panel "+e.panel, e.expr, exported)...)
	}
	return errs
}

// loadRules reads a PrometheusRule and parses its spec as Prometheus
// parses a rule file (unknown fields refused, names validated strictly).
func loadRules(path string) (*rulefmt.RuleGroups, []error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, []error{err}
	}
	var obj struct {
		APIVersion string `yaml:"apiVersion"`
		Kind       string `yaml:"kind"`
		Metadata   struct {
			Name string `yaml:"name"`
		} `yaml:"metadata"`
		Spec yaml.Node `yaml:"spec"`
	}
	if err := yaml.Unmarshal(b, &obj); err != nil {
		return nil, []error{fmt.Errorf("%s: %w", path, err)}
	}
	if obj.APIVersion != "monitoring.coreos.com/v1" || obj.Kind != "PrometheusRule" || obj.Metadata.Name == "" {
		return nil, []error{fmt.Errorf("%s: want a named monitoring.coreos.com/v1 PrometheusRule, got %s %s %q",
			path, obj.APIVersion, obj.Kind, obj.Metadata.Name)}
	}
	spec, err := yaml.Marshal(&obj.Spec)
	if err != nil {
		return nil, []error{fmt.Errorf("%s: spec: %w", path, err)}
	}
	groups, errs := rulefmt.Parse(spec, false, model.LegacyValidation, promql, slog.New(slog.DiscardHandler))
	for i := range errs {
		errs[i] = fmt.Errorf("%s: spec: %w", path, errs[i])
	}
	if len(errs) == 0 && len(groups.Groups) == 0 {
		errs = append(errs, fmt.Errorf("%s: no rule groups", path))
	}
	return groups, errs
}

var severities = []string{"critical", "warning", "info"}

// checkAlert wants what a person paged at night needs: how bad, what
// happened, what it means, where the runbook is (and that it exists).
func checkAlert(what string, r rulefmt.Rule, root string) []error {
	if r.Alert == "" {
		return nil
	}
	var errs []error
	if !slices.Contains(severities, r.Labels["severity"]) {
		errs = append(errs, fmt.Errorf("%s: label severity %q, want one of %v", what, r.Labels["severity"], severities))
	}
	for _, a := range []string{"summary", "description", "runbook"} {
		if strings.TrimSpace(r.Annotations[a]) == "" {
			errs = append(errs, fmt.Errorf("%s: no %s annotation", what, a))
		}
	}
	if rb := r.Annotations["runbook"]; rb != "" {
		if err := checkRunbook(root, rb); err != nil {
			errs = append(errs, fmt.Errorf("%s: runbook: %w", what, err))
		}
	}
	return errs
}

// checkRunbook wants "path#anchor" with a Markdown heading whose GitHub
// anchor is anchor.
func checkRunbook(root, ref string) error {
	file, anchor, ok := strings.Cut(ref, "#")
	if !ok || anchor == "" {
		return fmt.Errorf("%q: want path#section", ref)
	}
	f, err := os.Open(filepath.Join(root, filepath.FromSlash(file)))
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if h, ok := strings.CutPrefix(sc.Text(), "#"); ok && slug(strings.TrimLeft(h, "#")) == anchor {
			return nil
		}
	}
	return fmt.Errorf("%s has no section #%s", file, anchor)
}

var notSlug = regexp.MustCompile(`[^a-z0-9 _-]`)

// slug is GitHub's anchor for a heading.
func slug(h string) string {
	s := notSlug.ReplaceAllString(strings.ToLower(strings.TrimSpace(h)), "")
	return strings.ReplaceAll(s, " ", "-")
}

type panelExpr struct{ panel, expr string }

// dashboardExprs returns every target expression of every panel, rows'
// collapsed panels included; a panel without one is an error.
func dashboardExprs(path string) ([]panelExpr, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	type panel struct {
		Type    string `json:"type"`
		Title   string `json:"title"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
		Panels []json.RawMessage `json:"panels"`
	}
	var d struct {
		UID    string            `json:"uid"`
		Title  string            `json:"title"`
		Panels []json.RawMessage `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if d.UID == "" || d.Title == "" {
		return nil, fmt.Errorf("%s: a dashboard needs a uid and a title", path)
	}
	var out []panelExpr
	var errs []error
	var walk func([]json.RawMessage)
	walk = func(raw []json.RawMessage) {
		for _, r := range raw {
			var p panel
			if err := json.Unmarshal(r, &p); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", path, err))
				continue
			}
			walk(p.Panels)
			if p.Type == "row" {
				continue
			}
			if len(p.Targets) == 0 {
				errs = append(errs, fmt.Errorf("%s: panel %q has no query", path, p.Title))
			}
			for _, t := range p.Targets {
				out = append(out, panelExpr{panel: fmt.Sprintf("%q", p.Title), expr: t.Expr})
			}
		}
	}
	walk(d.Panels)
	if len(out) == 0 {
		errs = append(errs, fmt.Errorf("%s: no panels with queries", path))
	}
	return out, errors.Join(errs...)
}

// checkNames parses expr and wants every metric it selects exported
// (a histogram's _bucket, _sum and _count series by its name).
func checkNames(what, expr string, exported map[string]bool) []error {
	e, err := promql.ParseExpr(expr)
	if err != nil {
		return []error{fmt.Errorf("%s: %q: %w", what, expr, err)}
	}
	var errs []error
	for _, name := range selected(e) {
		if !exported[name] && !exported[histogramBase(name)] {
			errs = append(errs, fmt.Errorf("%s: metric %s is not exported by medmesh", what, name))
		}
	}
	if len(selected(e)) == 0 {
		errs = append(errs, fmt.Errorf("%s: %q selects no metric", what, expr))
	}
	return errs
}

// selected are the metric names an expression selects.
func selected(e parser.Expr) []string {
	var names []string
	for _, ms := range parser.ExtractSelectors(e) {
		for _, m := range ms {
			if m.Name == labels.MetricName && m.Type == labels.MatchEqual && !slices.Contains(names, m.Value) {
				names = append(names, m.Value)
			}
		}
	}
	return names
}

func histogramBase(name string) string {
	for _, s := range []string{"_bucket", "_sum", "_count"} {
		if b, ok := strings.CutSuffix(name, s); ok {
			return b
		}
	}
	return name
}

func readNames(path string) (map[string]bool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	names := map[string]bool{}
	for _, l := range strings.Fields(string(b)) {
		names[l] = true
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("%s: no metric names", path)
	}
	return names, nil
}
