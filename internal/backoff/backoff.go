// Package backoff is the retry schedule every medmesh client of a remote
// service uses (registry watches, the control loop, the SVID agent).
package backoff

import (
	"math/rand/v2"
	"time"
)

// Backoff is a capped exponential backoff with full jitter, so that many
// watchers that failed together do not retry together.
type Backoff struct {
	Min, Max time.Duration
	attempt  int
}

// Next returns the wait before the next attempt.
func (b *Backoff) Next() time.Duration {
	d := b.Min << min(b.attempt, 16)
	if d <= 0 || d > b.Max {
		d = b.Max
	}
	b.attempt++
	return d/2 + rand.N(d/2+1)
}

// Reset is called after a success.
func (b *Backoff) Reset() { b.attempt = 0 }
