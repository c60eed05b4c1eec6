package controlplane

import "time"

// The stages of a registry change, as medmesh_change_stage_seconds names
// them: where the latency of a change goes, from the registry's watch
// answer to the proxies' streams.
const (
	stageRegistry = "registry" // watch answer -> catalog at the loop (reads, coalescing, building it)
	stageQueue    = "queue"    // catalog at the loop -> round start (coalescing, a round in progress)
	stageBuild    = "build"    // round start -> IR built
	stagePublish  = "publish"  // IR built -> every proxy's update handed to its stream
)

// stageTimer times one round's stages for the catalog change it carries;
// a round that carries none (a proxy came, an SVID was renewed) records
// nothing.
type stageTimer struct {
	cp   *ControlPlane
	last time.Time // zero: not recording
}

// stageTimer starts timing a round: the registry and queue stages have
// passed already. It clears the loop's note of the pending change.
func (cp *ControlPlane) stageTimer(st *loopState) *stageTimer {
	t := &stageTimer{cp: cp}
	if st.received.IsZero() {
		return t
	}
	t.last = time.Now()
	if !st.observed.IsZero() && !st.observed.After(st.received) {
		cp.metrics.stageSeconds.WithLabelValues(stageRegistry).Observe(st.received.Sub(st.observed).Seconds())
	}
	cp.metrics.stageSeconds.WithLabelValues(stageQueue).Observe(t.last.Sub(st.received).Seconds())
	st.observed, st.received = time.Time{}, time.Time{}
	return t
}

// mark ends a stage.
func (t *stageTimer) mark(stage string) {
	if t.last.IsZero() {
		return
	}
	now := time.Now()
	t.cp.metrics.stageSeconds.WithLabelValues(stage).Observe(now.Sub(t.last).Seconds())
	t.last = now
}
