package controlplane_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"medmesh/controlplane"
	"medmesh/registry"
)

// TestUIEndpoints reads the status page and its API from a running
// control plane: the page and its files, one status read holding the
// /debug bodies, the services with their health and the change that
// first published the mesh, and trace look-ups refused clearly when the
// ID is malformed or no trace backend is configured. (The page itself is
// driven in Chromium by integration.TestStatusUIInBrowser.)
func TestUIEndpoints(t *testing.T) {
	catalog := filepath.Join(t.TempDir(), "catalog.yaml")
	writeFile(t, catalog, "services:\n- name: emr\n  kind: emr\n  instances:\n  - {id: emr-1, address: 10.0.0.1, port: 9101}\n"+
		"  - {id: emr-2, address: 10.0.0.2, port: 9101, health: warning}\n")
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cp, err := controlplane.New(controlplane.Options{
		Logger: log, Source: &registry.File{Path: catalog, Interval: 20 * time.Millisecond, Logger: log},
		XDSListen: "127.0.0.1:0", AdminListen: "127.0.0.1:0", AdminAuth: controlplane.AdminAuth{DevLoopback: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cp.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	base := "http://" + cp.AdminAddr().String()

	for path, want := range map[string]string{
		"/ui":               "<title>medmesh: single site</title>",
		"/ui/static/ui.js":  "/ui/api/status",
		"/ui/static/ui.css": "--bad:",
	} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), want) {
			t.Errorf("GET %s: %s, body without %q", path, resp.Status, want)
		}
		if path == "/ui" && !strings.Contains(resp.Header.Get("Content-Security-Policy"), "default-src 'self'") {
			t.Errorf("GET /ui: CSP %q", resp.Header.Get("Content-Security-Policy"))
		}
	}

	var st map[string]any
	waitFor(t, func() error {
		st = getJSON(t, base+"/ui/api/status")
		if changes, _ := st["changes"].([]any); len(changes) == 0 {
			return errors.New("no change listed yet")
		}
		return nil
	})
	checkKeys(t, "/ui/api/status", st, []string{"now", "proxies", "policies", "residency", "services", "identities", "changes", "traces"})
	if px := st["proxies"].(map[string]any); px["ready"] != true || px["serving"] == "" {
		t.Errorf("status proxies part: %v", px)
	}
	checkKeys(t, "/ui/api/status change", st["changes"].([]any)[0], []string{"trigger", "at", "durationMs", "rebuilt", "pushed"}, "traceId", "error")
	svcs := st["services"].([]any)
	if len(svcs) != 1 {
		t.Fatalf("services %v", svcs)
	}
	checkKeys(t, "/ui/api/status service", svcs[0], []string{"name", "namespace", "kind", "protocol", "phi", "instances"})
	var health []string
	for _, in := range svcs[0].(map[string]any)["instances"].([]any) {
		checkKeys(t, "/ui/api/status instance", in, []string{"id", "address", "port", "health"}, "site", "peer")
		health = append(health, in.(map[string]any)["health"].(string))
	}
	if strings.Join(health, ",") != "passing,warning" {
		t.Errorf("instance health %v", health)
	}
	if tr := st["traces"].(map[string]any); tr["query"] != false {
		t.Errorf("traces %v without a backend", tr)
	}

	for path, want := range map[string]struct {
		code int
		body string
	}{
		"/ui/api/traces/not-hex":                          {http.StatusBadRequest, "16 or 32 hexadecimal digits"},
		"/ui/api/traces/4bf92f3577b34da6a3ce929d0e0e4736": {http.StatusNotFound, "--trace-query-url"},
	} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want.code || !strings.Contains(string(b), want.body) {
			t.Errorf("GET %s: %s %q, want %d and %q", path, resp.Status, b, want.code, want.body)
		}
	}
}
