package adminauth

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Record is one audited admin call: who, what, when and the outcome.
type Record struct {
	Start     time.Time
	Principal Principal // zero when the caller was not authenticated
	Request   *http.Request
	Need      Class
	Status    int
	// Reason says why a call was refused; never a credential.
	Reason string
}

// Auditor writes admin audit records: always a log line ("admin audit"),
// and, with a Trail, a FHIR AuditEvent JSON line (trail.go).
type Auditor struct {
	Log   *slog.Logger
	Trail *Trail // nil: log lines only

	decisions *prometheus.CounterVec
	failures  prometheus.Counter
}

// NewAuditor registers the admin metrics with reg.
func NewAuditor(log *slog.Logger, trail *Trail, reg prometheus.Registerer) *Auditor {
	a := &Auditor{Log: log, Trail: trail,
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "medmesh_admin_requests_total",
			Help: "Admin API calls that needed a role, by role needed and outcome (allowed, unauthenticated, forbidden, unavailable).",
		}, []string{"role", "outcome"}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "medmesh_admin_audit_write_failures_total",
			Help: "Admin audit records that could not be written to the --audit-log trail (they were still logged).",
		}),
	}
	if reg != nil {
		reg.MustRegister(a.decisions, a.failures)
	}
	return a
}

// Record audits one call. Allowed reads are counted but not recorded: a
// status page refreshing every few seconds would drown the trail.
func (a *Auditor) Record(rec Record) {
	if a == nil {
		return
	}
	outcome := "allowed"
	if rec.Reason != "" { // refused by the Guard
		switch rec.Status {
		case http.StatusUnauthorized:
			outcome = "unauthenticated"
		case http.StatusForbidden:
			outcome = "forbidden"
		default:
			outcome = "unavailable"
		}
	}
	if a.decisions != nil {
		a.decisions.WithLabelValues(rec.Need.String(), outcome).Inc()
	}
	if outcome == "allowed" && rec.Need < RoleOperate {
		return
	}
	who := rec.Principal.ID
	if who == "" {
		who = "unauthenticated"
	}
	r := rec.Request
	path := safePath(r.URL.Path)
	remote, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		remote = r.RemoteAddr
	}
	attrs := []any{"who", who, "via", rec.Principal.Via, "role", rec.Principal.Role.String(), "method", r.Method, "path", path,
		"needs", rec.Need.String(), "status", rec.Status, "outcome", outcome, "remote", remote}
	if rec.Reason != "" {
		attrs = append(attrs, "reason", rec.Reason)
	}
	if outcome == "allowed" {
		a.Log.Info("admin audit", attrs...)
	} else {
		a.Log.Warn("admin audit", attrs...)
	}
	if a.Trail == nil {
		return
	}
	rule := "role " + rec.Principal.Role.String() + " via " + rec.Principal.Via
	if rec.Reason != "" {
		rule = "refused: " + rec.Reason
	}
	err = a.Trail.record(trailEvent{
		Start: rec.Start, End: time.Now(), Who: who, Remote: remote, Method: r.Method, Status: rec.Status,
		// The route is the action (fixed paths, no identifiers); the query
		// (a service name, an overlap) is left out like the sidecar's paths.
		Path: path, Rule: rule,
	})
	if err != nil {
		a.failures.Inc()
		a.Log.Error("admin audit record not written to the trail", "err", err)
	}
}

// safePath keeps a caller-chosen path short and printable: refused
// requests may carry anything.
func safePath(p string) string {
	if len(p) > 128 {
		p = p[:128] + "..."
	}
	q := strconv.Quote(p)
	return q[1 : len(q)-1]
}

type principalKey struct{}

func withPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// PrincipalFrom returns the caller the Guard let through, for handlers
// that log who did something.
func PrincipalFrom(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	return p, ok
}
