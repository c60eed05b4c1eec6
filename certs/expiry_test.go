package certs

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"medmesh/internal/testutil"
)

func TestExpiryWarningWindow(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for life, want := range map[time.Duration]time.Duration{
		365 * 24 * time.Hour: 30 * 24 * time.Hour, // a long intermediate: 30 days
		30 * 24 * time.Hour:  30 * 24 * time.Hour / 4,
		2 * time.Hour:        30 * time.Minute,
	} {
		if got := ExpiryWarning(t0, t0.Add(life)); got != want {
			t.Errorf("life %s: window %s, want %s", life, got, want)
		}
	}
}

// A site's control plane warns before its intermediate runs out, keeps
// reminding without flooding the log, and says so loudly once it has.
func TestWatchExpiryWarnsInTime(t *testing.T) {
	c := &clock{time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	ca, err := New(Options{TrustDomain: "medmesh.local", StateDir: t.TempDir(), RootTTL: 8 * 24 * time.Hour, Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	notAfter := ca.SigningNotAfter()
	if !notAfter.Equal(c.t.Add(8 * 24 * time.Hour)) {
		t.Fatalf("SigningNotAfter %s", notAfter)
	}
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	var last time.Time
	step := func(at time.Time) string {
		buf.Reset()
		c.t = at
		var next time.Duration
		last, next = ca.checkExpiry(log, last)
		if next <= 0 || next > time.Hour {
			t.Fatalf("next check in %s", next)
		}
		return buf.String()
	}
	// 8 days of life: the window is 2 days.
	if out := step(notAfter.Add(-3 * 24 * time.Hour)); out != "" {
		t.Fatalf("3 days before the end: %s", out)
	}
	out := step(notAfter.Add(-47 * time.Hour))
	if !strings.Contains(out, "level=WARN") || !strings.Contains(out, "expires soon") || !strings.Contains(out, notAfter.UTC().Format(time.RFC3339)) {
		t.Fatalf("47 hours before the end: %q", out)
	}
	if out := step(notAfter.Add(-40 * time.Hour)); out != "" {
		t.Fatalf("reminded after 7 hours: %s", out)
	}
	if out := step(notAfter.Add(-23 * time.Hour)); !strings.Contains(out, "expires soon") {
		t.Fatalf("no daily reminder: %q", out)
	}
	if out := step(notAfter.Add(-21 * time.Hour)); !strings.Contains(out, "expires soon") {
		t.Fatalf("no hourly reminder in the last day: %q", out)
	}
	if out := step(notAfter.Add(time.Hour)); !strings.Contains(out, "level=ERROR") || !strings.Contains(out, "EXPIRED") {
		t.Fatalf("after the end: %q", out)
	}

	// The watcher itself checks at start and stops with its context.
	c.t = notAfter.Add(-time.Hour)
	var lb testutil.SyncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { ca.WatchExpiry(ctx, slog.New(slog.NewTextHandler(&lb, nil))); close(done) }()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(lb.String(), "expires soon") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	if !strings.Contains(lb.String(), "expires soon") {
		t.Fatalf("WatchExpiry did not warn at start: %q", lb.String())
	}
}
