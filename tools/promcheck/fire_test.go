package main

import (
	"fmt"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/promql/promqltest"
)

// Each alert's expression, read from the PrometheusRule, is evaluated by
// Prometheus's engine (promqltest, what Prometheus tests PromQL with)
// against series that must make it fire, with the value the annotations
// print, and against healthy series that must not. None of the alerts
// uses `for:`, so the expression firing is the alert firing.
func TestAlertsFire(t *testing.T) {
	groups, errs := loadRules("../../deploy/monitoring/prometheusrule.yaml")
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	exprs := map[string]string{}
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			if r.For != 0 {
				t.Errorf("%s has for: %s; this test would need the rule evaluator", r.Alert, r.For)
			}
			exprs[r.Alert] = strings.Join(strings.Fields(r.Expr), " ")
		}
	}
	cases := []struct {
		alert, load, at, fires string // fires: the expected output, "" for none
	}{
		// A CDS NACK standing since t=0, seen at 10m: 600s > 300s.
		{"MedmeshXDSNACKStanding", `medmesh_xds_standing_nack_oldest_timestamp_seconds{type="CDS",instance="cp"} 0+0x20`,
			"10m", `{type="CDS",instance="cp"} 600`},
		// Since 8m: stood 2 minutes at 10m.
		{"MedmeshXDSNACKStanding", `medmesh_xds_standing_nack_oldest_timestamp_seconds{type="CDS",instance="cp"} 480+0x20`,
			"10m", ""},
		// A 1h SVID expiring at 1000s: at 950s, 50s left of 3600s.
		{"MedmeshSVIDNearExpiry", `medmesh_svid_earliest_expiry_timestamp_seconds{instance="cp"} 1000+0x20
  medmesh_svid_earliest_expiry_lifetime_seconds{instance="cp"} 3600+0x20`, "950s", `medmesh_svid_earliest_expiry_timestamp_seconds{instance="cp"} 50`},
		// At 10m the same SVID has 400s left, more than 360s: renewal may still come.
		{"MedmeshSVIDNearExpiry", `medmesh_svid_earliest_expiry_timestamp_seconds{instance="cp"} 1000+0x20
  medmesh_svid_earliest_expiry_lifetime_seconds{instance="cp"} 3600+0x20`, "10m", ""},
		// One critical request shed at 5m: the series exists at 0 from
		// the start, so increase() sees it.
		{"MedmeshCriticalRequestShed", `medmesh_sidecar_shed_requests_total{priority="critical",instance="sc"} 0 0 0 0 0 1 1 1 1 1 1
  medmesh_sidecar_shed_requests_total{priority="low",instance="sc"} 0+10x10`, "7m", `{priority="critical",instance="sc"} 1`},
		// Only low-priority requests shed: no page.
		{"MedmeshCriticalRequestShed", `medmesh_sidecar_shed_requests_total{priority="critical",instance="sc"} 0+0x10
  medmesh_sidecar_shed_requests_total{priority="low",instance="sc"} 0+10x10`, "7m", ""},
		{"MedmeshAuditWriteFailure", `medmesh_sidecar_audit_errors_total{instance="sc"} 0 0 0 2 2 2 2 2`, "5m", `{instance="sc"} 2`},
		{"MedmeshAuditWriteFailure", `medmesh_sidecar_audit_errors_total{instance="sc"} 3+0x10
  medmesh_audit_write_failures_total{instance="sc"} 3+0x10
  medmesh_admin_audit_write_failures_total{instance="cp"} 0+0x10`, "9m", ""},
		// A sidecar in batch audit mode: the writer counts what it could
		// not write; the requests had already been answered, so the
		// sidecar's per-request error counter stays at 0.
		{"MedmeshAuditWriteFailure", `medmesh_sidecar_audit_errors_total{instance="sc"} 0+0x10
  medmesh_audit_write_failures_total{instance="sc"} 0 0 0 3 3 3 3
  medmesh_admin_audit_write_failures_total{instance="cp"} 0+0x10`, "5m", `{instance="sc"} 3`},
		// Sync mode counts one failure in both sidecar counters: one series.
		{"MedmeshAuditWriteFailure", `medmesh_sidecar_audit_errors_total{instance="sc"} 0 0 0 1 1 1 1
  medmesh_audit_write_failures_total{instance="sc"} 0 0 0 1 1 1 1`, "5m", `{instance="sc"} 1`},
		// The control plane's admin trail.
		{"MedmeshAuditWriteFailure", `medmesh_sidecar_audit_errors_total{instance="sc"} 0+0x10
  medmesh_admin_audit_write_failures_total{instance="cp"} 0 0 0 1 1 1 1`, "5m", `{instance="cp"} 1`},
		// Stale since 60s, seen at 5m: 240s > 120s.
		{"MedmeshPeerStale", `medmesh_peer_stale_since_timestamp_seconds{peer="north",site="north",instance="cp"} 60+0x10`,
			"5m", `{peer="north",site="north",instance="cp"} 240`},
		{"MedmeshPeerStale", `medmesh_peer_stale_since_timestamp_seconds{peer="north",site="north",instance="cp"} 240+0x10`, "5m", ""},
		{"MedmeshPeerImportsWithdrawn", `medmesh_peer_imports_withdrawn{peer="north",site="north",instance="cp"} 0 0 1 1`,
			"3m", `medmesh_peer_imports_withdrawn{peer="north",site="north",instance="cp"} 1`},
		{"MedmeshPeerImportsWithdrawn", `medmesh_peer_imports_withdrawn{peer="north",site="north",instance="cp"} 0 0 0 0`, "3m", ""},
	}
	tested := map[string]bool{}
	for _, c := range cases {
		expr, ok := exprs[c.alert]
		if !ok {
			t.Errorf("no alert %s in the rules", c.alert)
			continue
		}
		tested[c.alert] = true
		name := c.alert + "/fires"
		if c.fires == "" {
			name = c.alert + "/quiet"
		}
		t.Run(name, func(t *testing.T) {
			script := fmt.Sprintf("load 1m\n  %s\n\neval instant at %s %s\n", c.load, c.at, expr)
			if c.fires != "" {
				script += "  " + c.fires + "\n"
			}
			promqltest.RunTest(t, script, promqltest.NewTestEngine(t, false, 0, promqltest.DefaultMaxSamplesPerQuery))
		})
	}
	for a := range exprs {
		if !tested[a] {
			t.Errorf("alert %s is not evaluated by this test", a)
		}
	}
}
