package main

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func TestSidecarRefusesBadInput(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "rules.yaml")
	os.WriteFile(bad, []byte("rules:\n  - name: a\n    match: {pathPrefix: /a}\n    phi: maybe\n"), 0o600)
	code, _, stderr := runCmd("sidecar", "--extproc-listen", "unix://"+filepath.Join(dir, "s"), "--rules", bad)
	if code != 2 || !strings.Contains(stderr, bad) || !strings.Contains(stderr, "line 4") {
		t.Errorf("bad rules: code %d stderr %q; want the file and line named", code, stderr)
	}
	code, _, stderr = runCmd("sidecar", "--extproc-listen", "")
	if code != 2 || !strings.Contains(stderr, "nothing to run") {
		t.Errorf("nothing to run: code %d stderr %q", code, stderr)
	}
	key := filepath.Join(dir, "key")
	os.WriteFile(key, []byte("0123456789abcdef0123"), 0o644)
	code, _, stderr = runCmd("sidecar", "--extproc-listen", "unix://"+filepath.Join(dir, "s"), "--audit-log", filepath.Join(dir, "a.log"), "--audit-key-file", key)
	if code != 2 || !strings.Contains(stderr, "chmod 600") {
		t.Errorf("readable key: code %d stderr %q", code, stderr)
	}
}

func freePort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond) // polling interval, not synchronisation
	}
}

// TestSidecarServesExtProc runs `medmesh sidecar` with a unix socket, a
// rule file and an audit trail; a bad rule file keeps the previous rules,
// a good one replaces them.
func TestSidecarServesExtProc(t *testing.T) {
	dir := t.TempDir()
	rules := filepath.Join(dir, "rules.yaml")
	writeRules := func(class string) {
		os.WriteFile(rules+".tmp", []byte("rules:\n  - {name: stat, match: {pathPrefix: /stat}, phi: true, class: "+class+", priority: critical}\n"), 0o600)
		os.Rename(rules+".tmp", rules)
	}
	writeRules("pharmacy.stat")
	sock := filepath.Join(dir, "extproc.sock")
	health := freePort(t)
	auditLog := filepath.Join(dir, "audit.log")
	var stderr syncBuf
	done := make(chan int, 1)
	go func() {
		done <- run([]string{"sidecar", "--extproc-listen", "unix://" + sock, "--health-listen", health, "--service", "emr",
			"--rules", rules, "--rules-poll", "10ms", "--audit-log", auditLog, "--audit-durability", "batch"}, &bytes.Buffer{}, &stderr)
	}()
	poll(t, "readyz", func() bool {
		resp, err := http.Get("http://" + health + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	class := func() string {
		s, err := extprocv3.NewExternalProcessorClient(conn).Process(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		s.Send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{
			Headers: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{{Key: ":method", RawValue: []byte("POST")}, {Key: ":path", RawValue: []byte("/stat/order")}}}}}})
		r, err := s.Recv()
		if err != nil {
			t.Fatal(err)
		}
		s.Send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{
			Headers: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{{Key: ":status", RawValue: []byte("200")}}}}}})
		s.Recv()
		s.CloseSend()
		for _, h := range r.GetRequestHeaders().GetResponse().GetHeaderMutation().GetSetHeaders() {
			if h.GetHeader().GetKey() == "x-medmesh-class" {
				return string(h.GetHeader().GetRawValue())
			}
		}
		return ""
	}
	if got := class(); got != "pharmacy.stat" {
		t.Fatalf("class %q, want the operator rule's", got)
	}
	os.WriteFile(rules+".tmp", []byte("rules:\n  - {name: stat, match: {}, phi: true, class: x, priority: critical}\n"), 0o600)
	os.Rename(rules+".tmp", rules)
	poll(t, "the bad file to be rejected", func() bool { return strings.Contains(stderr.String(), "previous rules stay in force") })
	if !strings.Contains(stderr.String(), "rules.yaml:2") {
		t.Errorf("reload error does not name file and line: %s", stderr.String())
	}
	if got := class(); got != "pharmacy.stat" {
		t.Fatalf("after a bad file: class %q, want the previous rules", got)
	}
	writeRules("pharmacy.urgent")
	poll(t, "the good file to be loaded", func() bool { return class() == "pharmacy.urgent" })
	resp, err := http.Get("http://" + health + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	var body bytes.Buffer
	body.ReadFrom(resp.Body)
	resp.Body.Close()
	if !strings.Contains(body.String(), `medmesh_sidecar_requests_total{class="pharmacy.stat",outcome="ok",priority="critical"}`) {
		t.Errorf("metrics lack the request counter:\n%s", body.String())
	}
	syscall.Kill(os.Getpid(), syscall.SIGTERM) // caught by the command's NotifyContext
	if code := <-done; code != 0 {
		t.Fatalf("exit code %d: %s", code, stderr.String())
	}
	b, _ := os.ReadFile(auditLog)
	if n := strings.Count(string(b), `"resourceType":"AuditEvent"`); n < 3 {
		t.Errorf("%d audit records, want at least 3", n)
	}
}
