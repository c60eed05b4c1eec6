package residency

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"medmesh/internal/latest"
)

// File is a residency policy source backed by one Rego file. It polls,
// like the catalog and policy-directory sources: edge nodes often mount
// volumes where inotify is unreliable, and reading one small file a
// second costs nothing.
//
// An edit that does not compile is logged with OPA's file:line message
// and reported by Status; the previous policy stays in force and nothing
// is sent, so a bad edit never loosens (or tightens) residency by
// accident. A file that is missing or broken before any policy was loaded
// is an error from Load and Run: the command refuses to start rather
// than run with a policy the operator did not write.
type File struct {
	Path     string
	Interval time.Duration
	Logger   *slog.Logger

	mu      sync.Mutex
	policy  *Policy // in force; nil until loaded
	data    []byte  // last content read, good or bad: unchanged bytes are not re-parsed or re-logged
	status  Status
	readErr string // last read error, logged once
}

// Status is what the source reports to the status page.
type Status struct {
	Path string `json:"path"`
	// Digest identifies the policy in force (Policy.Digest).
	Digest   string    `json:"digest,omitempty"`
	LoadedAt time.Time `json:"loadedAt,omitzero"`
	// LastError is why the file's current content is not in force (OPA's
	// file:line message, or a read error); empty when it is.
	LastError   string    `json:"lastError,omitempty"`
	LastErrorAt time.Time `json:"lastErrorAt,omitzero"`
}

// Name identifies the source in logs and status.
func (f *File) Name() string { return "rego:" + f.Path }

// Status returns the source's current status.
func (f *File) Status() Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.status
	s.Path = f.Path
	return s
}

// Load reads and compiles the file and puts it in force for Run. A
// command calls it before starting so that a missing or broken policy
// stops it with OPA's file:line message.
func (f *File) Load() (*Policy, error) {
	data, err := os.ReadFile(f.Path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrPolicy, err)
	}
	p, err := Parse(f.Path, data)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.policy, f.data = p, data
	f.status = Status{Digest: p.digest, LoadedAt: time.Now()}
	return p, nil
}

// Run sends the policy in force now (loading the file if Load was not
// called) and a newly compiled policy whenever the file changes, until
// ctx ends. It returns at once if there is no policy to start from.
func (f *File) Run(ctx context.Context, out chan *Policy) error {
	log := f.Logger
	if log == nil {
		log = slog.Default()
	}
	interval := f.Interval
	if interval <= 0 {
		interval = time.Second
	}
	f.mu.Lock()
	p := f.policy
	f.mu.Unlock()
	if p == nil {
		var err error
		if p, err = f.Load(); err != nil {
			return err
		}
	}
	log.Info("residency policy in force", "file", f.Path, "digest", p.digest)
	latest.Send(out, p)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(interval):
		}
		if p := f.poll(log); p != nil {
			latest.Send(out, p)
		}
	}
}

// poll reads the file and returns a new policy to send, or nil.
func (f *File) poll(log *slog.Logger) *Policy {
	data, err := os.ReadFile(f.Path)
	f.mu.Lock()
	defer f.mu.Unlock()
	if err != nil {
		// Deleting the file does not remove residency: with no policy
		// there would be no rule at all, so the last one stays.
		if msg := err.Error(); msg != f.readErr {
			f.readErr = msg
			f.fail(log, err)
		}
		return nil
	}
	if f.readErr != "" {
		f.readErr = ""
		f.data = nil // readable again: judge its content afresh
	}
	if bytes.Equal(data, f.data) {
		return nil
	}
	f.data = data
	p, err := Parse(f.Path, data)
	if err != nil {
		f.fail(log, err)
		return nil
	}
	if p.digest == f.policy.digest {
		// Back to the content in force (e.g. a broken edit reverted).
		f.status.LastError, f.status.LastErrorAt = "", time.Time{}
		return nil
	}
	f.policy = p
	f.status = Status{Digest: p.digest, LoadedAt: time.Now()}
	log.Info("residency policy reloaded", "file", f.Path, "digest", p.digest)
	return p
}

// fail records an error; f.mu is held.
func (f *File) fail(log *slog.Logger, err error) {
	f.status.LastError, f.status.LastErrorAt = err.Error(), time.Now()
	log.Error("residency policy file rejected; the previous policy stays in force",
		"file", f.Path, "digest", f.policy.digest, "err", err)
}
