package controlplane

import (
	"fmt"
	"slices"
	"time"

	"go.opentelemetry.io/otel/trace"

	api "medmesh/api/admin"
	"medmesh/controlplane/xds"
)

// pendingChange is a round being published, for the status page's list
// of recent configuration changes (admin.ChangeLog).
type pendingChange struct {
	cp     *ControlPlane
	change api.Change
	start  time.Time
}

func (cp *ControlPlane) startChange(span trace.Span, triggers []string, rebuilt bool) *pendingChange {
	c := api.Change{Trigger: slices.Clone(triggers), Rebuilt: rebuilt, Pushed: []string{}}
	if sc := span.SpanContext(); sc.IsSampled() {
		c.TraceID = sc.TraceID().String()
	}
	now := time.Now()
	c.At = now
	return &pendingChange{cp: cp, change: c, start: now}
}

// done records the round if it changed something or failed: a proxy
// connecting to a configuration it already holds is not a change.
func (p *pendingChange) done(report *xds.Report, err error) {
	c := p.change
	c.DurationMS = float64(time.Since(p.start).Microseconds()) / 1000
	if report != nil {
		c.Pushed = append(c.Pushed, report.Pushed...)
		if len(report.Failed) > 0 {
			c.Error = report.Failed[0].Error()
			if n := len(report.Failed); n > 1 {
				c.Error += fmt.Sprintf(" (and %d more)", n-1)
			}
		}
	}
	if err != nil {
		c.Error = err.Error()
	}
	if !c.Rebuilt && len(c.Pushed) == 0 && c.Error == "" {
		return
	}
	p.cp.changes.Add(c)
}
