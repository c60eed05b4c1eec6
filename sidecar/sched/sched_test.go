package sched

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"medmesh/sidecar/classify"
)

// fakeClock is a settable clock; aging is decided by it, so tests never
// depend on how fast the machine is.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

var long = [numPriorities]time.Duration{time.Hour, time.Hour, time.Hour, time.Hour, time.Hour}

type result struct {
	p   Priority
	t   *Ticket
	err error
}

// enqueue starts an Acquire and waits until it is queued (or answered).
func enqueue(t *testing.T, ctx context.Context, l *Limiter, p Priority, out chan<- result) {
	t.Helper()
	before := l.Stats().Queued
	go func() {
		tk, err := l.Acquire(ctx, p)
		out <- result{p, tk, err}
	}()
	q := int(p)
	if l.cfg.Policy == PolicyFIFO {
		q = 0
	}
	waitFor(t, func() bool { return l.Stats().Queued[q] != before[q] || len(out) > 0 })
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		time.Sleep(time.Millisecond) // polling interval, not synchronisation
	}
}

func hold(t *testing.T, l *Limiter, n int) []*Ticket {
	t.Helper()
	var ts []*Ticket
	for range n {
		tk, err := l.Acquire(context.Background(), classify.Medium)
		if err != nil {
			t.Fatal(err)
		}
		ts = append(ts, tk)
	}
	return ts
}

func TestStrictPriorityOrder(t *testing.T) {
	clk := &fakeClock{now: time.Unix(1000, 0)}
	l := New(Config{Limit: 1, MaxWait: long, Now: clk.Now}).Limiter("emr")
	held := hold(t, l, 1)
	out := make(chan result, 10)
	for _, p := range []Priority{classify.Background, classify.Low, classify.Medium, classify.High, classify.Critical} {
		enqueue(t, context.Background(), l, p, out)
	}
	held[0].Release(Success)
	var got []Priority
	for range 5 {
		r := <-out
		if r.err != nil {
			t.Fatal(r.err)
		}
		got = append(got, r.p)
		r.t.Release(Success)
	}
	want := []Priority{classify.Critical, classify.High, classify.Medium, classify.Low, classify.Background}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("dispatch order %v, want %v", got, want)
		}
	}
}

func TestFIFOIgnoresPriority(t *testing.T) {
	l := New(Config{Limit: 1, MaxWait: long, Policy: PolicyFIFO}).Limiter("emr")
	held := hold(t, l, 1)
	out := make(chan result, 10)
	order := []Priority{classify.Background, classify.Critical, classify.Low}
	for _, p := range order {
		enqueue(t, context.Background(), l, p, out)
	}
	held[0].Release(Success)
	for _, want := range order {
		r := <-out
		if r.p != want {
			t.Fatalf("FIFO served %s, want %s", r.p, want)
		}
		r.t.Release(Success)
	}
}

func TestAgingPreventsStarvation(t *testing.T) {
	clk := &fakeClock{now: time.Unix(1000, 0)}
	l := New(Config{Limit: 1, MaxWait: long, AgingStep: time.Second, AgingEvery: 4, Now: clk.Now}).Limiter("emr")
	held := hold(t, l, 1)
	out := make(chan result, 20)
	enqueue(t, context.Background(), l, classify.Background, out)
	clk.Add(2 * time.Second)                               // the background request has now waited past AgingStep
	enqueue(t, context.Background(), l, classify.Low, out) // fresh: not aged
	for range 6 {
		enqueue(t, context.Background(), l, classify.High, out)
	}
	held[0].Release(Success)
	var got []Priority
	for range 8 {
		r := <-out
		if r.err != nil {
			t.Fatal(r.err)
		}
		got = append(got, r.p)
		if len(got) == 5 {
			// Aging never overtakes critical.
			clk.Add(time.Hour)
			enqueue(t, context.Background(), l, classify.Critical, out)
		}
		r.t.Release(Success)
	}
	r := <-out
	got = append(got, r.p)
	r.t.Release(Success)
	// Picks 1-3 strict (high), pick 4 is the aged share: the oldest
	// (background), pick 5 high, then critical at once (critical is not
	// a pick), picks 6 and 7 high, pick 8 aged again: the low request,
	// now old too.
	want := []Priority{classify.High, classify.High, classify.High, classify.Background, classify.High,
		classify.Critical, classify.High, classify.High, classify.Low}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("dispatch order %v, want %v", got, want)
		}
	}
	if s := l.Stats(); s.Inflight != 0 {
		t.Fatalf("inflight %d after all released", s.Inflight)
	}
}

func TestSheddingLowestFirst(t *testing.T) {
	bounds := [numPriorities]int{1, 1, 1, 1, 1}
	l := New(Config{Limit: 1, MaxWait: long, QueueBound: bounds}).Limiter("imaging")
	held := hold(t, l, 1)
	out := make(chan result, 10)
	enqueue(t, context.Background(), l, classify.Low, out)
	enqueue(t, context.Background(), l, classify.Background, out)
	enqueue(t, context.Background(), l, classify.High, out)
	// A second high request finds its queue full: the least urgent
	// waiter (background) is displaced, not the low one.
	enqueue(t, context.Background(), l, classify.High, out)
	r := <-out
	var se *ShedError
	if !errors.As(r.err, &se) || r.p != classify.Background || se.Reason != "displaced by high" || se.RetryAfter < time.Second {
		t.Fatalf("got %s %v, want background displaced with a retry-after", r.p, r.err)
	}
	// Critical displaces too, and is itself queued.
	enqueue(t, context.Background(), l, classify.Critical, out)
	enqueue(t, context.Background(), l, classify.Critical, out)
	r = <-out
	if !errors.Is(r.err, ErrShed) || r.p != classify.Low {
		t.Fatalf("got %s %v, want low displaced by critical", r.p, r.err)
	}
	// With no lower waiter left, a full queue refuses the newcomer.
	enqueue(t, context.Background(), l, classify.Low, out)
	enqueue(t, context.Background(), l, classify.Low, out)
	r = <-out
	if !errors.As(r.err, &se) || se.Reason != "queue full" || r.p != classify.Low {
		t.Fatalf("got %s %v, want low refused with queue full", r.p, r.err)
	}
	held[0].Release(Success)
	for range 5 { // critical, critical, high, high, low
		r := <-out
		if r.err != nil {
			t.Fatalf("%s: %v", r.p, r.err)
		}
		r.t.Release(Success)
	}
	if s := l.Stats(); s.Inflight != 0 || s.Queued != [numPriorities]int{} {
		t.Fatalf("stats after drain: %+v", s)
	}
}

func TestMaxWaitAndDeadline(t *testing.T) {
	mw := long
	mw[classify.Low] = 20 * time.Millisecond
	l := New(Config{Limit: 1, MaxWait: mw}).Limiter("his")
	held := hold(t, l, 1)
	_, err := l.Acquire(context.Background(), classify.Low)
	var se *ShedError
	if !errors.As(err, &se) || se.Reason != "max wait" {
		t.Fatalf("got %v, want max wait shed", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := l.Acquire(ctx, classify.High); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want the caller's deadline", err)
	}
	if s := l.Stats(); s.Queued != [numPriorities]int{} || s.Inflight != 1 {
		t.Fatalf("a timed-out waiter stayed behind: %+v", s)
	}
	held[0].Release(Success)
}

func TestEarlyRejectionSparesCritical(t *testing.T) {
	clk := &fakeClock{now: time.Unix(1000, 0)}
	mw := long
	mw[classify.Low] = 2 * time.Second
	l := New(Config{Limit: 1, MaxWait: mw, Now: clk.Now}).Limiter("emr")
	// Teach the limiter that a request holds its slot for 1s.
	tk := hold(t, l, 1)[0]
	clk.Add(time.Second)
	tk.Release(Success)
	held := hold(t, l, 1)
	out := make(chan result, 10)
	enqueue(t, context.Background(), l, classify.Low, out) // estimated 1s: queued
	enqueue(t, context.Background(), l, classify.Low, out) // estimated 2s: queued
	_, err := l.Acquire(context.Background(), classify.Low)
	var se *ShedError
	if !errors.As(err, &se) || se.Reason != "estimated wait" {
		t.Fatalf("got %v, want an immediate estimated-wait rejection", err)
	}
	enqueue(t, context.Background(), l, classify.Critical, out)
	if len(out) != 0 {
		t.Fatalf("critical was answered without capacity: %+v", <-out)
	}
	held[0].Release(Success)
	if r := <-out; r.p != classify.Critical || r.err != nil {
		t.Fatalf("got %s %v, want critical admitted", r.p, r.err)
	} else {
		r.t.Release(Success)
	}
	(<-out).t.Release(Success)
	(<-out).t.Release(Success)
}

// TestNoLeakedSlotsUnderCancellation: many callers cancel at random
// points (queued, just granted, after admission); afterwards every slot
// must be free and every queue empty.
func TestNoLeakedSlotsUnderCancellation(t *testing.T) {
	const limit = 4
	l := New(Config{Limit: limit, MaxWait: long}).Limiter("vitals")
	var wg sync.WaitGroup
	var admitted, cancelled atomic.Int64
	for i := range 400 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithCancel(context.Background())
			p := Priority(i % numPriorities)
			if i%3 == 0 {
				go cancel()
			}
			tk, err := l.Acquire(ctx, p)
			if err != nil {
				cancelled.Add(1)
				cancel()
				return
			}
			admitted.Add(1)
			if i%2 == 0 {
				tk.Release(Success)
				tk.Release(Success) // a double release must not free two slots
			} else {
				tk.Release(Cancelled)
			}
			cancel()
		}()
	}
	wg.Wait()
	if s := l.Stats(); s.Inflight != 0 || s.Queued != [numPriorities]int{} {
		t.Fatalf("leaked: %+v (admitted %d, cancelled %d)", s, admitted.Load(), cancelled.Load())
	}
	if admitted.Load() == 0 {
		t.Fatal("nothing admitted")
	}
	// All slots are usable again.
	held := hold(t, l, limit)
	for _, tk := range held {
		tk.Release(Success)
	}
}

func TestGradientLimit(t *testing.T) {
	g := newGradient(AdaptiveConfig{Min: 4, Max: 200}.withDefaults(50))
	start := g.Limit()
	for range 200 {
		g.Sample(10*time.Millisecond, g.Limit(), false)
	}
	grown := g.Limit()
	if grown <= start {
		t.Fatalf("limit did not grow under steady latency: %d -> %d", start, grown)
	}
	for range 200 {
		g.Sample(100*time.Millisecond, g.Limit(), false)
	}
	if shrunk := g.Limit(); shrunk >= grown {
		t.Fatalf("limit did not shrink when latency rose: %d -> %d", grown, shrunk)
	}
	for range 100 {
		g.Sample(0, 0, true)
	}
	if g.Limit() != 4 {
		t.Fatalf("drops should drive the limit to its minimum, got %d", g.Limit())
	}
	// Idle upstream: no growth.
	g2 := newGradient(AdaptiveConfig{Min: 4, Max: 200}.withDefaults(50))
	before := g2.Limit()
	for range 100 {
		g2.Sample(10*time.Millisecond, 1, false)
	}
	if g2.Limit() != before {
		t.Fatalf("idle upstream changed the limit: %d -> %d", before, g2.Limit())
	}
}

func TestAdaptiveLimiterAdmits(t *testing.T) {
	l := New(Config{Limit: 8, Adaptive: &AdaptiveConfig{Min: 2, Max: 16}}).Limiter("x")
	var wg sync.WaitGroup
	for range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tk, err := l.Acquire(context.Background(), Priority(rand.IntN(numPriorities)))
			if err == nil {
				tk.Release(Success)
			}
		}()
	}
	wg.Wait()
	if s := l.Stats(); s.Inflight != 0 || s.Limit < 2 || s.Limit > 16 {
		t.Fatalf("stats %+v", s)
	}
}

func TestSizing(t *testing.T) {
	c := Config{}
	if LongestWait(c) != 10*time.Second {
		t.Fatalf("LongestWait = %s", LongestWait(c))
	}
	if got := MaxOutstanding(c); got != 64+4096+1024+512+256+128 {
		t.Fatalf("MaxOutstanding = %d", got)
	}
}

func TestCriticalReserve(t *testing.T) {
	l := New(Config{Limit: 16, MaxWait: long}).Limiter("vitals")
	held := hold(t, l, 15) // the non-critical share (16 - 16/16)
	out := make(chan result, 4)
	enqueue(t, context.Background(), l, classify.High, out)
	// A critical request takes the reserved slot at once.
	tk, err := l.Acquire(context.Background(), classify.Critical)
	if err != nil || l.Stats().Inflight != 16 {
		t.Fatalf("critical not admitted from the reserve: %v %+v", err, l.Stats())
	}
	tk.Release(Success)
	if len(out) != 0 {
		t.Fatal("the reserved slot went to a non-critical request")
	}
	held[0].Release(Success)
	r := <-out
	if r.err != nil || r.p != classify.High {
		t.Fatalf("queued high request: %v", r.err)
	}
	r.t.Release(Success)
	for _, h := range held[1:] {
		h.Release(Success)
	}
	if s := l.Stats(); s.Inflight != 0 {
		t.Fatalf("inflight %d", s.Inflight)
	}
	// FIFO has no reserve: all 16 slots are shared.
	f := New(Config{Limit: 16, Policy: PolicyFIFO}).Limiter("x")
	for _, h := range hold(t, f, 16) {
		h.Release(Success)
	}
}
