package sched

import (
	"math"
	"sync"
	"time"
)

// AdaptiveConfig configures the gradient limit (Netflix
// concurrency-limits' Gradient2 family): the limit follows the ratio of
// long-term to short-term latency, growing by about sqrt(limit) while
// latency holds and shrinking as soon as latency rises, so queueing
// moves out of the upstream (where it is FIFO) into our priority queues.
type AdaptiveConfig struct {
	Min, Max int
	// Tolerance is how much latency may exceed its long-term average
	// before the limit shrinks (default 1.5).
	Tolerance float64
	// Smoothing weighs each new limit (default 0.2).
	Smoothing float64
	// Window is the number of samples the long-term average spans
	// (default 600).
	Window int
}

func (a AdaptiveConfig) withDefaults(initial int) AdaptiveConfig {
	if a.Min <= 0 {
		a.Min = 4
	}
	if a.Max <= 0 {
		a.Max = max(initial*4, a.Min)
	}
	if a.Tolerance <= 1 {
		a.Tolerance = 1.5
	}
	if a.Smoothing <= 0 || a.Smoothing > 1 {
		a.Smoothing = 0.2
	}
	if a.Window <= 0 {
		a.Window = 600
	}
	return a
}

type gradient struct {
	mu      sync.Mutex
	cfg     AdaptiveConfig
	limit   float64
	longRTT float64 // seconds
}

func newGradient(cfg AdaptiveConfig) *gradient {
	return &gradient{cfg: cfg, limit: float64(cfg.Min+cfg.Max) / 2}
}

func (g *gradient) Limit() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return int(g.limit)
}

// Sample feeds one request's latency; inflight is the concurrency it saw.
func (g *gradient) Sample(rtt time.Duration, inflight int, dropped bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	short := rtt.Seconds()
	if dropped {
		g.limit = max(float64(g.cfg.Min), g.limit*0.9)
		return
	}
	if short <= 0 {
		return
	}
	if g.longRTT == 0 {
		g.longRTT = short
	}
	w := float64(g.cfg.Window)
	g.longRTT = g.longRTT*(w-1)/w + short/w
	if g.longRTT/short > 2 {
		// Latency improved a lot (the upstream scaled up): forget faster.
		g.longRTT *= 0.95
	}
	// An upstream we do not keep busy tells us nothing about its limit.
	if float64(inflight) < g.limit/2 {
		return
	}
	grad := math.Max(0.5, math.Min(1.0, g.cfg.Tolerance*g.longRTT/short))
	next := g.limit*grad + math.Sqrt(g.limit)
	g.limit = g.limit*(1-g.cfg.Smoothing) + next*g.cfg.Smoothing
	g.limit = math.Max(float64(g.cfg.Min), math.Min(float64(g.cfg.Max), g.limit))
}
