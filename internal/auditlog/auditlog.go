// Package auditlog is the audit trails' file writer, shared by both
// planes: JSON lines appended to a 0600 file, rotated by size, fsynced
// per record (SyncEach) or queued and written in batches off the
// caller's path (Batched), with every record that could not be written
// counted. It knows nothing of what a record says: the sidecar's HIPAA
// trail (sidecar/audit) and the control plane's admin trail
// (controlplane/adminauth) each map their own events to a FHIR
// AuditEvent (fhir.go has the shared resource types) and hand the
// mapping to Open.
//
// The package registers no metrics: each caller exports Failures and
// QueueFullWaits under its own names, so one process running both
// planes never registers a name twice.
package auditlog

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Durability chooses when records reach the disk.
type Durability int

const (
	// SyncEach writes and fsyncs every record before Record returns:
	// nothing acknowledged is lost, even on power failure, at the cost of
	// one write and one fsync on every caller's path.
	SyncEach Durability = iota
	// Batched queues records in memory (a bounded queue, QueueSize) and
	// returns at once; a writer goroutine encodes and writes them in
	// batches (every FlushInterval, or as soon as FlushSize are queued)
	// and fsyncs every BatchInterval. Close writes everything queued, so a
	// clean shutdown loses nothing; a crash of the process loses what was
	// queued (at most about one FlushInterval), a power failure what was
	// not yet fsynced (at most about one BatchInterval). See queue.go for
	// what happens when the queue is full.
	Batched
)

// ParseDurability parses "sync" or "batch".
func ParseDurability(s string) (Durability, error) {
	switch s {
	case "sync", "":
		return SyncEach, nil
	case "batch", "batched":
		return Batched, nil
	}
	return 0, fmt.Errorf("audit durability %q: want sync or batch", s)
}

// Options configure a Writer.
type Options struct {
	Path          string
	Durability    Durability
	BatchInterval time.Duration // Batched: fsync period, default 1s
	// Batched only: QueueSize bounds the records held in memory (default
	// 8192); they are written every FlushInterval (default 10ms), or as
	// soon as FlushSize (default 64) are queued. Small batches often, not
	// large ones rarely: a batch takes a core while it is encoded, and
	// 1 ms of it every 50 ms is 2% of the time, enough to reach the p99 of
	// requests; the total work is the same.
	QueueSize     int
	FlushInterval time.Duration
	FlushSize     int
	// Logger receives write errors of the Batched writer (which has no
	// caller to return them to); nil: discarded. Never record content.
	Logger *slog.Logger
	// MaxBytes rotates the file when a record would grow it past this
	// size (default 100 MiB); MaxFiles rotated files are kept (default 10).
	MaxBytes int64
	MaxFiles int
}

// Writer is an append-only trail of records of type E. E is what the
// caller has at hand (cheap to copy); Batched mode converts it to its
// JSON form on the writer goroutine, not on the caller's path.
type Writer[E any] struct {
	opts Options
	// toJSON maps a record to the value written as its JSON line.
	toJSON func(E) any
	// mu guards the file: Record in SyncEach mode, the writer goroutine
	// in Batched mode, and Close.
	mu     sync.Mutex
	f      *os.File
	w      *bufio.Writer
	size   int64
	closed bool
	q      *queue[E] // Batched only
	// failures counts records that could not be written (Failures).
	failures atomic.Uint64
}

// Open opens (appending to) or creates the trail; toJSON maps each
// record to the value marshalled as its line.
func Open[E any](o Options, toJSON func(E) any) (*Writer[E], error) {
	if o.Path == "" {
		return nil, errors.New("audit log: path is empty")
	}
	if toJSON == nil {
		return nil, fmt.Errorf("audit log %s: no record encoding", o.Path)
	}
	if o.BatchInterval <= 0 {
		o.BatchInterval = time.Second
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = 100 << 20
	}
	if o.MaxFiles <= 0 {
		o.MaxFiles = 10
	}
	if o.QueueSize <= 0 {
		o.QueueSize = 8192
	}
	if o.FlushInterval <= 0 {
		o.FlushInterval = 10 * time.Millisecond
	}
	if o.FlushSize <= 0 || o.FlushSize > o.QueueSize {
		o.FlushSize = min(64, o.QueueSize)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	l := &Writer[E]{opts: o, toJSON: toJSON}
	if err := l.open(); err != nil {
		return nil, err
	}
	if o.Durability == Batched {
		l.q = newQueue[E](o)
		go l.writer()
	}
	return l, nil
}

// Failures is the number of records that could not be written (encode,
// write, rotation or fsync errors, or a record arriving after Close),
// for the caller's write-failure metric.
func (l *Writer[E]) Failures() uint64 { return l.failures.Load() }

// QueueFullWaits is the number of times a Batched Record waited for room
// in a full queue (QueueFullWaits is 0 in SyncEach mode).
func (l *Writer[E]) QueueFullWaits() uint64 {
	if l.q == nil {
		return 0
	}
	return l.q.fullWaits.Load()
}

func (l *Writer[E]) open() error {
	// 0600: a trail says who looked at or changed what.
	f, err := os.OpenFile(l.opts.Path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("audit log %s: %w", l.opts.Path, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("audit log %s: %w", l.opts.Path, err)
	}
	l.f, l.w, l.size = f, bufio.NewWriterSize(f, 64<<10), st.Size()
	return nil
}

// Record appends one record. SyncEach: it returns once the record is on
// disk, or an error when it could not be written (the caller decides
// whether to fail its request). Batched: it returns once the record is
// queued, waiting for room if the queue is full; an error only after
// Close. Either way a record not written is counted in Failures.
func (l *Writer[E]) Record(e E) error {
	if l.q != nil {
		if err := l.q.put(e); err != nil {
			l.failures.Add(1)
			return fmt.Errorf("audit log %s: %w", l.opts.Path, err)
		}
		return nil
	}
	err := l.recordSync(e)
	if err != nil {
		l.failures.Add(1)
	}
	return err
}

func (l *Writer[E]) recordSync(e E) error {
	line, err := l.encode(nil, e)
	if err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return fmt.Errorf("audit log %s: closed", l.opts.Path)
	}
	if err := l.write(line); err != nil {
		return err
	}
	if err := l.w.Flush(); err != nil {
		return fmt.Errorf("audit log %s: write: %w", l.opts.Path, err)
	}
	if err := l.f.Sync(); err != nil {
		return fmt.Errorf("audit log %s: fsync: %w", l.opts.Path, err)
	}
	return nil
}

// encode appends e's JSON line to buf.
func (l *Writer[E]) encode(buf []byte, e E) ([]byte, error) {
	v := l.toJSON(e)
	switch ev := v.(type) {
	case AuditEvent:
		return append(ev.AppendJSON(buf), '\n'), nil
	case *AuditEvent:
		return append(ev.AppendJSON(buf), '\n'), nil
	}
	line, err := json.Marshal(v)
	if err != nil {
		return buf, fmt.Errorf("audit log %s: encode: %w", l.opts.Path, err)
	}
	return append(append(buf, line...), '\n'), nil
}

// write appends one line to the buffer, rotating first if the line would
// grow the file past MaxBytes. Called with l.mu held.
func (l *Writer[E]) write(line []byte) error {
	if l.size > 0 && l.size+int64(len(line)) > l.opts.MaxBytes {
		if err := l.rotate(); err != nil {
			return err
		}
	}
	if _, err := l.w.Write(line); err != nil {
		return fmt.Errorf("audit log %s: write: %w", l.opts.Path, err)
	}
	l.size += int64(len(line))
	return nil
}

// rotate renames path -> path.1 -> path.2 ... keeping MaxFiles. Called
// with l.mu held.
func (l *Writer[E]) rotate() error {
	if err := l.w.Flush(); err != nil {
		return fmt.Errorf("audit log %s: rotate: %w", l.opts.Path, err)
	}
	if err := l.f.Sync(); err != nil {
		return fmt.Errorf("audit log %s: rotate: %w", l.opts.Path, err)
	}
	l.f.Close()
	for i := l.opts.MaxFiles - 1; i >= 1; i-- {
		from := l.opts.Path + "." + strconv.Itoa(i)
		if _, err := os.Stat(from); err == nil {
			os.Rename(from, l.opts.Path+"."+strconv.Itoa(i+1))
		}
	}
	if err := os.Rename(l.opts.Path, l.opts.Path+".1"); err != nil {
		return fmt.Errorf("audit log %s: rotate: %w", l.opts.Path, err)
	}
	return l.open()
}

// Close writes what is queued, fsyncs and closes the trail. Records
// arriving afterwards are refused (and counted in Failures).
func (l *Writer[E]) Close() error {
	var werr error
	if l.q != nil {
		// The writer drains the queue, then stops; only then is the
		// file closed under it.
		werr = l.q.close()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	err := errors.Join(werr, l.w.Flush(), l.f.Sync(), l.f.Close())
	if err != nil {
		return fmt.Errorf("audit log %s: close: %w", l.opts.Path, err)
	}
	return nil
}
