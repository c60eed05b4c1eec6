// Package audit writes the HIPAA audit trail: one JSON line per PHI
// request, with the content NIST SP 800-53 AU-3 asks for (what happened,
// when, where, the source and the destination, the outcome and the
// identities involved), shaped as a FHIR R4 AuditEvent so that a
// hospital's FHIR audit repository can ingest the lines as they are.
//
// A record names who touched which kind of record, never its content: the
// patient reference is replaced by a keyed HMAC-SHA256 (the key stays
// with the hospital, so the hash links records of one patient without
// being reversible by a dictionary of medical record numbers), and the
// request path, which often holds identifiers, is not recorded at all.
package audit

import (
	"bufio"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"

	"medmesh/sidecar/classify"
)

// Durability chooses when records reach the disk.
type Durability int

const (
	// SyncEach fsyncs after every record: nothing acknowledged is lost on
	// power failure, at the cost of one fsync per PHI request.
	SyncEach Durability = iota
	// Batched fsyncs at most every BatchInterval: up to one interval of
	// records may be lost on power failure (not on a process crash:
	// records are written to the kernel at once).
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

// Options configure a Log.
type Options struct {
	Path string
	// Key is the HMAC key for patient references (at least 16 bytes).
	Key           []byte
	Durability    Durability
	BatchInterval time.Duration // default 1s
	// MaxBytes rotates the file when a record would grow it past this
	// size (default 100 MiB); MaxFiles rotated files are kept (default 10).
	MaxBytes int64
	MaxFiles int
	// Observer names the sidecar writing the trail (e.g. its node id).
	Observer string
}

// Event is one PHI request, as the sidecar saw it.
type Event struct {
	Start, End time.Time
	// Method is the HTTP method (GET, POST, ...); it becomes the
	// AuditEvent action (R, C, U, D, E).
	Method string
	// Status is the HTTP status sent to the caller (0 if unknown, e.g.
	// the stream ended before a response).
	Status int
	// Shed is set when medmesh refused the request (it never reached the
	// service); Reason says why, from medmesh's fixed vocabulary.
	Shed   bool
	Reason string
	// Source and Destination are SPIFFE IDs; SourceAddress is the peer.
	Source, SourceAddress, Destination string
	// Service is the destination service name.
	Service   string
	Class     string
	Priority  classify.Priority
	Rule      string
	RequestID string
	Patient   classify.Secret
}

// Log is an append-only audit trail.
type Log struct {
	opts   Options
	mu     sync.Mutex
	f      *os.File
	w      *bufio.Writer
	size   int64
	dirty  bool
	closed bool
	stop   chan struct{}
	done   chan struct{}
	err    error // last background fsync error
}

// Open opens (appending to) or creates the trail.
func Open(o Options) (*Log, error) {
	if o.Path == "" {
		return nil, errors.New("audit log: path is empty")
	}
	if len(o.Key) < 16 {
		return nil, fmt.Errorf("audit log %s: HMAC key has %d bytes, want at least 16", o.Path, len(o.Key))
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
	if o.Observer == "" {
		o.Observer = "medmesh-sidecar"
	}
	l := &Log{opts: o, stop: make(chan struct{}), done: make(chan struct{})}
	if err := l.open(); err != nil {
		return nil, err
	}
	if o.Durability == Batched {
		go l.syncLoop()
	} else {
		close(l.done)
	}
	return l, nil
}

func (l *Log) open() error {
	// 0600: the trail says who looked at which patient's data.
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

// Record appends one event. It returns an error when the record could
// not be written (the caller decides whether to fail the request).
func (l *Log) Record(e Event) error {
	line, err := json.Marshal(l.toAuditEvent(e))
	if err != nil {
		return fmt.Errorf("audit log %s: encode: %w", l.opts.Path, err)
	}
	line = append(line, '\n')
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return fmt.Errorf("audit log %s: closed", l.opts.Path)
	}
	if l.size > 0 && l.size+int64(len(line)) > l.opts.MaxBytes {
		if err := l.rotate(); err != nil {
			return err
		}
	}
	if _, err := l.w.Write(line); err != nil {
		return fmt.Errorf("audit log %s: write: %w", l.opts.Path, err)
	}
	l.size += int64(len(line))
	// Flush to the kernel at once so a crash of this process loses
	// nothing; only the fsync is batched.
	if err := l.w.Flush(); err != nil {
		return fmt.Errorf("audit log %s: write: %w", l.opts.Path, err)
	}
	if l.opts.Durability == SyncEach {
		if err := l.f.Sync(); err != nil {
			return fmt.Errorf("audit log %s: fsync: %w", l.opts.Path, err)
		}
	} else {
		l.dirty = true
	}
	return nil
}

// rotate renames path -> path.1 -> path.2 ... keeping MaxFiles. Called
// with l.mu held.
func (l *Log) rotate() error {
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

func (l *Log) syncLoop() {
	defer close(l.done)
	t := time.NewTicker(l.opts.BatchInterval)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			l.mu.Lock()
			if l.dirty && !l.closed {
				if err := l.f.Sync(); err != nil {
					l.err = err
				}
				l.dirty = false
			}
			l.mu.Unlock()
		}
	}
}

// Close flushes, fsyncs and closes the trail.
func (l *Log) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	close(l.stop)
	err := errors.Join(l.w.Flush(), l.f.Sync(), l.f.Close(), l.err)
	l.mu.Unlock()
	<-l.done
	if err != nil {
		return fmt.Errorf("audit log %s: close: %w", l.opts.Path, err)
	}
	return nil
}

// HashPatient is the keyed hash recorded instead of a patient reference.
func HashPatient(key []byte, ref string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(ref))
	return hex.EncodeToString(m.Sum(nil))
}
