package admin

import (
	"slices"
	"sync"

	api "medmesh/api/admin"
)

// ChangeLog keeps the last rounds that changed what proxies hold, for
// the status page: a bounded ring, so a control plane up for months holds
// as many as a fresh one. The control loop adds; handlers read.
type ChangeLog struct {
	mu   sync.Mutex
	ring []api.Change
	next int
	full bool
}

// DefaultChangeLogSize is how many changes the page can list.
const DefaultChangeLogSize = 50

// NewChangeLog returns a log of the last n changes (n < 1: the default).
func NewChangeLog(n int) *ChangeLog {
	if n < 1 {
		n = DefaultChangeLogSize
	}
	return &ChangeLog{ring: make([]api.Change, n)}
}

// Add records a change, dropping the oldest when full.
func (l *ChangeLog) Add(c api.Change) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ring[l.next] = c
	l.next = (l.next + 1) % len(l.ring)
	if l.next == 0 {
		l.full = true
	}
}

// Recent returns the changes, newest first (never nil).
func (l *ChangeLog) Recent() []api.Change {
	if l == nil {
		return []api.Change{}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []api.Change
	if l.full {
		out = append(out, l.ring[l.next:]...)
	}
	out = append(out, l.ring[:l.next]...)
	slices.Reverse(out)
	if out == nil {
		out = []api.Change{}
	}
	return out
}
