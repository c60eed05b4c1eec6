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
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"sync"
	"time"

	"medmesh/internal/auditlog"
	"medmesh/sidecar/classify"
)

// Durability chooses when records reach the disk (auditlog.SyncEach or
// auditlog.Batched; see there).
type Durability = auditlog.Durability

const (
	SyncEach = auditlog.SyncEach
	Batched  = auditlog.Batched
)

// ParseDurability parses "sync" or "batch".
func ParseDurability(s string) (Durability, error) { return auditlog.ParseDurability(s) }

// Options configure a Log: the file handling (path, rotation,
// durability, the batched queue) is internal/auditlog's; Key and
// Observer are the trail's.
type Options struct {
	auditlog.Options
	// Key is the HMAC key for patient references (at least 16 bytes).
	Key []byte
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

// Log is an append-only audit trail of PHI requests.
type Log struct {
	key      []byte
	observer string
	w        *auditlog.Writer[Event]
	// macs are keyed HMACs to reuse: a new one per record (two SHA-256
	// states keyed afresh) was a tenth of a record's cost.
	macs sync.Pool
}

// Open opens (appending to) or creates the trail.
func Open(o Options) (*Log, error) {
	if o.Path == "" {
		return nil, errors.New("audit log: path is empty")
	}
	if len(o.Key) < 16 {
		return nil, fmt.Errorf("audit log %s: HMAC key has %d bytes, want at least 16", o.Path, len(o.Key))
	}
	if o.Observer == "" {
		o.Observer = "medmesh-sidecar"
	}
	l := &Log{key: o.Key, observer: o.Observer}
	l.macs.New = func() any { return hmac.New(sha256.New, l.key) }
	w, err := auditlog.Open(o.Options, func(e Event) any { return l.toAuditEvent(e) })
	if err != nil {
		return nil, err
	}
	l.w = w
	return l, nil
}

// Record appends one event. SyncEach: it returns once the record is on
// disk, or an error when it could not be written (the caller decides
// whether to fail the request). Batched: it returns once the record is
// queued, waiting for room if the queue is full; an error only after
// Close.
func (l *Log) Record(e Event) error { return l.w.Record(e) }

// Failures is the number of records that could not be written, for the
// medmesh_audit_write_failures_total metric.
func (l *Log) Failures() uint64 { return l.w.Failures() }

// QueueFullWaits is the number of times a Batched Record waited for room
// in a full queue, for medmesh_audit_queue_full_total.
func (l *Log) QueueFullWaits() uint64 { return l.w.QueueFullWaits() }

// Close writes what is queued, fsyncs and closes the trail. Records
// arriving afterwards are refused (and counted in Failures).
func (l *Log) Close() error { return l.w.Close() }

// hashPatient is HashPatient with the log's key and a reused HMAC.
func (l *Log) hashPatient(ref string) string {
	m := l.macs.Get().(hash.Hash)
	m.Reset()
	m.Write([]byte(ref))
	var sum [sha256.Size]byte
	out := hex.EncodeToString(m.Sum(sum[:0]))
	l.macs.Put(m)
	return out
}

// HashPatient is the keyed hash recorded instead of a patient reference.
func HashPatient(key []byte, ref string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(ref))
	return hex.EncodeToString(m.Sum(nil))
}
