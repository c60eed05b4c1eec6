package auditlog

import (
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// Batched audit: why a queue, and what happens when it is full.
//
// Every PHI request ends with an audit record. Written on the request's
// path (encode, write, fsync), the record costs the request a syscall or
// two and, with sync durability, a disk flush; queued, it costs a copy
// under a mutex, and a writer goroutine does the rest in batches, off the
// path, a few times a second.
//
// A full queue means the disk has stopped keeping up (it is stalled,
// failing, or far slower than the request rate) for at least QueueSize
// records. Three answers were possible:
//
//   - drop the record and count it: the request goes on, and the hospital
//     has PHI accesses nobody can account for. HIPAA's audit control
//     (45 CFR 164.312(b)) is exactly that accounting, so a silent gap is
//     not acceptable, and a counted one is still a gap;
//   - refuse the request: but the record is written when the request
//     ends, after the service has answered; refusing then withholds an
//     answer the service already gave (a cardiac alert acknowledged, a
//     result posted) without undoing it;
//   - wait for room (backpressure): the finished request's answer is
//     held until its record is queued, so the trail stays complete, and
//     the sidecar slows to the rate the disk can record at.
//
// medmesh waits: no PHI leaves the sidecar without its audit record being
// accepted, the same guarantee sync durability gives, which is also why
// a PHI service's extension fails closed. The scheduler's slot is freed
// before the wait (phi.Admission releases it first), so a slow disk holds
// answers back without shrinking the service's capacity to start new
// requests. Every wait is counted (QueueFullWaits,
// medmesh_audit_queue_full_total) and every record the writer could not
// write (Failures, medmesh_audit_write_failures_total), so an operator
// sees the disk fall behind long before it fills the queue. A record
// that cannot be written at all (an I/O error) is counted and logged
// without its content; retrying it in memory forever would only move the
// loss to the next crash.

var errClosed = errors.New("closed")

// queue is the Batched mode's bounded queue of records.
type queue[E any] struct {
	mu        sync.Mutex
	notFull   *sync.Cond
	pending   []E
	size      int
	flushSize int
	closed    bool
	// kick wakes the writer before its interval (FlushSize reached, or
	// the queue full); stop tells it to drain and end; done says it has.
	kick      chan struct{}
	stop      chan struct{}
	done      chan struct{}
	err       error // the writer's last error, returned by close
	fullWaits atomic.Uint64
}

func newQueue[E any](o Options) *queue[E] {
	q := &queue[E]{
		pending: make([]E, 0, o.FlushSize), size: o.QueueSize, flushSize: o.FlushSize,
		kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}),
	}
	q.notFull = sync.NewCond(&q.mu)
	return q
}

// put queues e, waiting while the queue is full (see above).
func (q *queue[E]) put(e E) error {
	q.mu.Lock()
	if len(q.pending) >= q.size && !q.closed {
		q.fullWaits.Add(1)
		q.wake()
		for len(q.pending) >= q.size && !q.closed {
			q.notFull.Wait()
		}
	}
	if q.closed {
		q.mu.Unlock()
		return errClosed
	}
	q.pending = append(q.pending, e)
	n := len(q.pending)
	q.mu.Unlock()
	if n == q.flushSize {
		q.wake()
	}
	return nil
}

func (q *queue[E]) wake() {
	select {
	case q.kick <- struct{}{}:
	default:
	}
}

// take swaps the queued events for the (emptied) buffer spare.
func (q *queue[E]) take(spare []E) []E {
	q.mu.Lock()
	batch := q.pending
	q.pending = spare
	q.notFull.Broadcast()
	q.mu.Unlock()
	return batch
}

// close refuses further events, waits for the writer to write what is
// queued, and returns its last error.
func (q *queue[E]) close() error {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		<-q.done
		return nil
	}
	q.closed = true
	q.notFull.Broadcast()
	q.mu.Unlock()
	close(q.stop)
	<-q.done
	return q.err
}

// writer is the Batched mode's goroutine: it writes what is queued every
// FlushInterval (or when kicked), fsyncs every BatchInterval, and on
// stop writes the rest and returns.
func (l *Writer[E]) writer() {
	q := l.q
	defer close(q.done)
	flush := time.NewTicker(l.opts.FlushInterval)
	defer flush.Stop()
	fsync := time.NewTicker(l.opts.BatchInterval)
	defer fsync.Stop()
	var batch []E
	var line []byte
	unsynced := 0 // records written since the last fsync
	for {
		stopping := false
		select {
		case <-q.kick:
		case <-flush.C:
		case <-fsync.C:
			if err := l.sync(unsynced); err != nil {
				q.err = err
			}
			unsynced = 0
			continue
		case <-q.stop:
			stopping = true
		}
		batch = q.take(batch[:0])
		if len(batch) > 0 {
			n, err := l.writeBatch(batch, &line)
			unsynced += n
			if err != nil {
				q.err = err
			}
			// Drop the events' strings so the buffer holds no garbage.
			clear(batch)
		}
		if stopping {
			// Close flushes and fsyncs the rest.
			return
		}
	}
}

// writeBatch encodes and writes batch, returning how many records reached
// the kernel. Failures are counted and logged here.
func (l *Writer[E]) writeBatch(batch []E, line *[]byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var last error
	failed := 0
	for i, e := range batch {
		if i%32 == 31 {
			// A batch is a few hundred records of a few microseconds each:
			// let the request goroutines waiting for this P go first
			// rather than hold a core for a millisecond.
			runtime.Gosched()
		}
		var err error
		if *line, err = l.encode((*line)[:0], e); err == nil {
			err = l.write(*line)
		}
		if err != nil {
			failed++
			last = err
		}
	}
	written := len(batch) - failed
	if err := l.w.Flush(); err != nil {
		// What the buffer held is lost; a bufio.Writer stays failed
		// after an error, so start a fresh one for the next batch.
		failed, written, last = len(batch), 0, err
		l.w.Reset(l.f)
	}
	if failed > 0 {
		l.failures.Add(uint64(failed))
		l.opts.Logger.Error("audit records not written", "path", l.opts.Path, "records", failed, "err", last)
	}
	return written, last
}

// sync fsyncs the file if records were written since the last fsync.
func (l *Writer[E]) sync(unsynced int) error {
	if unsynced == 0 {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.f.Sync(); err != nil {
		// The kernel may have dropped those pages: count them as lost.
		l.failures.Add(uint64(unsynced))
		l.opts.Logger.Error("audit records may not be on disk: fsync failed", "path", l.opts.Path, "records", unsynced, "err", err)
		return err
	}
	return nil
}
