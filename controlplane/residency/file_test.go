package residency

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const localOnly = `package medmesh.residency

deny if {
	input.action == "data_transfer"
	input.destination.site != input.source.site
}
`

func write(t *testing.T, path, src string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
}

// next waits for the next policy Run sends.
func next(t *testing.T, out chan *Policy) *Policy {
	t.Helper()
	select {
	case p := <-out:
		return p
	case <-time.After(10 * time.Second):
		t.Fatal("no policy sent")
		return nil
	}
}

// waitFor polls cond: the source polls the file on its own clock.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// start, change, a broken change (the previous policy stays, the error is
// reported with file:line), the file deleted (the policy stays), fixed
// again.
func TestFileSource(t *testing.T) {
	path := filepath.Join(t.TempDir(), "residency.rego")
	write(t, path, localOnly)
	f := &File{Path: path, Interval: 10 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)}
	if _, err := f.Load(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan *Policy, 1)
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx, out) }()

	p := next(t, out)
	if p.Source() != localOnly || f.Status().Digest != p.Digest() || f.Status().LoadedAt.IsZero() {
		t.Fatalf("start: policy %q, status %+v", p.Name(), f.Status())
	}
	d := NewDecider(p)
	imaging := []Flow{flow("site-a", "hub", true, "imaging")}
	if d.Decide(imaging)[0].Allowed {
		t.Fatal("local-only policy allowed imaging to the hub")
	}

	write(t, path, imagingToHub)
	p = next(t, out)
	d.SetPolicy(p)
	if !d.Decide(imaging)[0].Allowed {
		t.Fatal("the changed policy is not in force")
	}
	good := f.Status()

	write(t, path, "package medmesh.residency\n\ndeny contains msg if {\n\tmsg := \n}\n")
	waitFor(t, "the broken edit to be reported", func() bool { return f.Status().LastError != "" })
	st := f.Status()
	if !strings.Contains(st.LastError, path+":5: rego_parse_error") {
		t.Errorf("last error %q, want OPA's file:line message", st.LastError)
	}
	if st.Digest != good.Digest || !st.LoadedAt.Equal(good.LoadedAt) || st.Path != path {
		t.Errorf("status after a broken edit %+v, want the previous policy %+v in force", st, good)
	}
	select {
	case p := <-out:
		t.Fatalf("a broken edit sent policy %s", p.Digest())
	default:
	}

	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the missing file to be reported", func() bool { return strings.Contains(f.Status().LastError, "no such file") })
	if f.Status().Digest != good.Digest {
		t.Error("deleting the file dropped the policy in force")
	}

	write(t, path, localOnly)
	p = next(t, out)
	if p.Source() != localOnly {
		t.Fatalf("fixed file: policy %q", p.Source())
	}
	if st := f.Status(); st.LastError != "" || st.Digest != p.Digest() {
		t.Errorf("status after the fix %+v", st)
	}

	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Run returned %v", err)
	}
}

// Reverting a broken edit to the content in force clears the error and
// sends nothing (the consumer already has that policy).
func TestFileSourceRevert(t *testing.T) {
	path := filepath.Join(t.TempDir(), "residency.rego")
	write(t, path, localOnly)
	f := &File{Path: path, Interval: 10 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := make(chan *Policy, 1)
	go f.Run(ctx, out)
	next(t, out)
	write(t, path, "package medmesh.residency\n\ndeny := 1\n")
	waitFor(t, "the error", func() bool { return strings.Contains(f.Status().LastError, path+":3: deny is number") })
	write(t, path, localOnly)
	waitFor(t, "the error to clear", func() bool { return f.Status().LastError == "" })
	select {
	case p := <-out:
		t.Errorf("reverting sent policy %s", p.Digest())
	default:
	}
}

// Without a usable file at start there is no policy to keep in force:
// Load and Run refuse, with OPA's message.
func TestFileSourceBrokenAtStart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "residency.rego")
	f := &File{Path: path, Interval: 10 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)}
	if _, err := f.Load(); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	write(t, path, "package medmesh.residency\n\ndeny if {\n")
	_, err := f.Load()
	if err == nil || !strings.Contains(err.Error(), path+":4: rego_parse_error") {
		t.Errorf("Load: %v", err)
	}
	err = f.Run(context.Background(), make(chan *Policy, 1))
	if err == nil || !strings.Contains(err.Error(), path+":4: rego_parse_error") {
		t.Errorf("Run: %v", err)
	}
}
