// Package audittest holds an in-memory audit recorder for tests of the
// packages that write audit records.
package audittest

import (
	"sync"

	"medmesh/sidecar/audit"
)

// Recorder keeps every audit record in memory.
type Recorder struct {
	mu     sync.Mutex
	events []audit.Event
}

// Record implements the audit sink.
func (r *Recorder) Record(e audit.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
	return nil
}

// All returns a copy of the records so far.
func (r *Recorder) All() []audit.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]audit.Event(nil), r.events...)
}
