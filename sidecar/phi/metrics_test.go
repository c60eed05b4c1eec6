package phi_test

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"medmesh/internal/metricstest"
	"medmesh/sidecar/audit"
	"medmesh/sidecar/classify"
	"medmesh/sidecar/phi"
	"medmesh/sidecar/sched"
)

type failingAudit struct{}

func (failingAudit) Record(audit.Event) error { return errors.New("disk full") }

// A critical request the scheduler refuses moves the critical series of
// the shed counter (every priority's series exists from the start), and
// every audit record that cannot be written moves the audit failures.
func TestMetricsShedAndAuditFailures(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m := phi.NewMetrics(reg)
	var waits [classify.NumPriorities]time.Duration
	for i := range waits {
		waits[i] = time.Millisecond
	}
	eng := phi.New(phi.Options{Scheduler: sched.New(sched.Config{Limit: 1, CriticalReserve: -1, MaxWait: waits}),
		Audit: failingAudit{}, Metrics: m, Logger: slog.New(slog.DiscardHandler), Service: "vitals"})
	for _, p := range []string{"critical", "high", "medium", "low", "background"} {
		if got := metricstest.Value(t, reg, "medmesh_sidecar_shed_requests_total", p); got != 0 {
			t.Fatalf("shed{%s} = %v before any request", p, got)
		}
	}
	alarm := phi.Input{Method: "POST", Path: "/patients/alarm"}
	held, err := eng.Admit(context.Background(), alarm)
	if err != nil || held.Priority != classify.Critical {
		t.Fatalf("first alarm: err=%v priority=%v, want admitted as critical", err, held.Priority)
	}
	if _, err := eng.Admit(context.Background(), alarm); !errors.Is(err, sched.ErrShed) {
		t.Fatalf("second alarm with the only slot held: %v, want shed", err)
	}
	if got := metricstest.Value(t, reg, "medmesh_sidecar_shed_requests_total", "critical"); got != 1 {
		t.Errorf("shed{critical} = %v, want 1", got)
	}
	if got := metricstest.Value(t, reg, "medmesh_sidecar_shed_requests_total", "low"); got != 0 {
		t.Errorf("shed{low} = %v, want 0", got)
	}
	held.Done(200, "")
	// The shed request's record and the completed one's both failed.
	if got := metricstest.Value(t, reg, "medmesh_sidecar_audit_errors_total", ""); got != 2 {
		t.Errorf("audit errors = %v, want 2", got)
	}
	metricstest.Lint(t, reg)
}
