package auditlog

import (
	"bufio"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

// rec stands for a trail's event; the writer does not care what it says.
type rec struct{ N int }

func recJSON(r rec) any { return map[string]int{"n": r.N} }

func countLines(t *testing.T, path string) int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	for sc := bufio.NewScanner(f); sc.Scan(); {
		n++
	}
	return n
}

// TestBatchedFullQueueWaits: with the writer stalled (as by a stalled
// disk) a full queue holds the next record back instead of dropping it,
// counts the wait, and lets it through once the writer catches up.
func TestBatchedFullQueueWaits(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l, err := Open[rec](Options{Path: path, Durability: Batched, QueueSize: 4, FlushSize: 4, FlushInterval: time.Hour}, recJSON)
	if err != nil {
		t.Fatal(err)
	}
	l.mu.Lock() // the file: the writer stalls on it
	record := func(n int) {
		for range n {
			if err := l.Record(rec{N: 1}); err != nil {
				t.Fatal(err)
			}
		}
	}
	// The first 4 are taken by the writer, which then stalls; the next 4
	// fill the queue.
	record(4)
	for queued(l) != 0 {
		runtime.Gosched()
	}
	record(4)
	recorded := make(chan error, 1)
	go func() { recorded <- l.Record(rec{N: 1}) }()
	for l.QueueFullWaits() == 0 {
		runtime.Gosched()
	}
	select {
	case err := <-recorded:
		l.mu.Unlock()
		t.Fatalf("Record returned (%v) while the queue was full", err)
	default:
	}
	l.mu.Unlock()
	if err := <-recorded; err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if n := countLines(t, path); n != 9 {
		t.Errorf("%d records, want 9", n)
	}
	if n := l.QueueFullWaits(); n != 1 {
		t.Errorf("QueueFullWaits() = %d, want 1", n)
	}
	if err := l.Record(rec{N: 1}); err == nil {
		t.Error("record after Close accepted")
	}
	if n := l.Failures(); n != 1 {
		t.Errorf("Failures() = %d after a record refused by a closed trail, want 1", n)
	}
}

// TestBatchedWriteFailureCounted: records the writer cannot write are
// counted (the medmesh_audit_write_failures_total metric), not lost
// silently, and Close reports the error.
func TestBatchedWriteFailureCounted(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l, err := Open[rec](Options{Path: path, Durability: Batched, FlushInterval: time.Millisecond}, recJSON)
	if err != nil {
		t.Fatal(err)
	}
	l.mu.Lock()
	l.f.Close() // every write now fails, as on a dead disk
	l.mu.Unlock()
	for range 3 {
		if err := l.Record(rec{N: 1}); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for l.Failures() < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("Failures() = %d after 3 unwritable records, want 3", l.Failures())
		}
		time.Sleep(time.Millisecond)
	}
	if err := l.Close(); err == nil {
		t.Error("Close of a trail whose writes failed returned no error")
	}
}

func queued(l *Writer[rec]) int {
	l.q.mu.Lock()
	defer l.q.mu.Unlock()
	return len(l.q.pending)
}

// TestSyncWriteFailureReturnedAndCounted: in SyncEach mode the caller
// gets the error (the admin trail counts it in its own metric) and
// Failures counts it too.
func TestSyncWriteFailureReturnedAndCounted(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l, err := Open(Options{Path: path}, recJSON)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Record(rec{N: 1}); err != nil {
		t.Fatal(err)
	}
	if n := countLines(t, path); n != 1 {
		t.Fatalf("%d lines after a synced record, want 1", n)
	}
	l.mu.Lock()
	l.f.Close() // every write now fails, as on a dead disk
	l.mu.Unlock()
	if err := l.Record(rec{N: 2}); err == nil {
		t.Fatal("a record on a dead disk returned no error")
	}
	if n := l.Failures(); n != 1 {
		t.Errorf("Failures() = %d, want 1", n)
	}
	if n := l.QueueFullWaits(); n != 0 {
		t.Errorf("QueueFullWaits() = %d in SyncEach mode, want 0", n)
	}
}
