package backoff_test

import (
	"testing"
	"time"

	"medmesh/internal/backoff"
)

// Backoff.Next draws from [d/2, d] with d = min(Min*2^attempt, Max): never
// above Max (an edge site must retry its registry at least that often) and
// jittered so watchers that failed together spread out.
func TestBackoffBounds(t *testing.T) {
	const minD, maxD = 100 * time.Millisecond, 3 * time.Second
	for attempt := range 12 {
		d := min(minD<<attempt, maxD)
		seen := map[time.Duration]bool{}
		for range 50 {
			b := backoff.Backoff{Min: minD, Max: maxD}
			for range attempt {
				b.Next()
			}
			got := b.Next()
			if got < d/2 || got > d {
				t.Fatalf("attempt %d: %v outside [%v, %v]", attempt, got, d/2, d)
			}
			seen[got] = true
		}
		if len(seen) < 2 {
			t.Errorf("attempt %d: 50 draws all %v; no jitter", attempt, seen)
		}
	}
}

func TestBackoffCapsAndResets(t *testing.T) {
	b := backoff.Backoff{Min: 250 * time.Millisecond, Max: 30 * time.Second}
	// Far past the point where Min<<attempt would overflow without the cap
	// on the shift.
	for i := range 1000 {
		if got := b.Next(); got > b.Max || (i > 10 && got < b.Max/2) {
			t.Fatalf("call %d: %v outside [Max/2, Max] = [%v, %v]", i, got, b.Max/2, b.Max)
		}
	}
	b.Reset()
	if got := b.Next(); got < b.Min/2 || got > b.Min {
		t.Errorf("after Reset: %v, want within [%v, %v]", got, b.Min/2, b.Min)
	}
}

// A Min of zero (an unset option) must not spin: it falls back to Max.
func TestBackoffZeroMin(t *testing.T) {
	b := backoff.Backoff{Max: time.Second}
	if got := b.Next(); got < b.Max/2 || got > b.Max {
		t.Errorf("Next() = %v, want within [%v, %v]", got, b.Max/2, b.Max)
	}
}
