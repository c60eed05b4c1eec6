package run_test

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"medmesh/internal/testutil"
	"medmesh/sidecar/run"
	"medmesh/sidecar/sched"
)

// options are `medmesh sidecar`'s defaults (cmd/medmesh sets them from
// its flags), logging as the command does, to logs.
func options(logs *testutil.SyncBuffer) run.Options {
	return run.Options{
		ExtProc: run.ExtProc{HealthListen: "127.0.0.1:0", RulesPoll: 2 * time.Second, AuditDurability: "sync",
			AuditMaxBytes: 100 << 20, Limit: sched.DefaultLimit, TrustDomain: "medmesh.local"},
		Namespace: "default",
		Logger:    slog.New(slog.NewTextHandler(logs, nil)),
	}
}

func TestStartRefusesBadInput(t *testing.T) {
	dir := t.TempDir()
	var logs testutil.SyncBuffer
	bad := filepath.Join(dir, "rules.yaml")
	os.WriteFile(bad, []byte("rules:\n  - name: a\n    match: {pathPrefix: /a}\n    phi: maybe\n"), 0o600)
	o := options(&logs)
	o.ExtProc.Listen, o.ExtProc.Rules = "unix://"+filepath.Join(dir, "s"), bad
	if _, err := run.Start(context.Background(), o); err == nil || !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), "line 4") {
		t.Errorf("bad rules: %v; want the file and line named", err)
	}
	o = options(&logs)
	if _, err := run.Start(context.Background(), o); err == nil || !strings.Contains(err.Error(), "nothing to run") {
		t.Errorf("nothing to run: %v", err)
	}
	key := filepath.Join(dir, "key")
	os.WriteFile(key, []byte("0123456789abcdef0123"), 0o644)
	o = options(&logs)
	o.ExtProc.Listen, o.ExtProc.AuditLog, o.ExtProc.AuditKeyFile = "unix://"+filepath.Join(dir, "s"), filepath.Join(dir, "a.log"), key
	if _, err := run.Start(context.Background(), o); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("readable key: %v", err)
	}
}

// TestStartServesExtProc runs the extension on a unix socket with a rule
// file and an audit trail; a bad rule file keeps the previous rules, a
// good one replaces them.
func TestStartServesExtProc(t *testing.T) {
	dir := t.TempDir()
	rules := filepath.Join(dir, "rules.yaml")
	writeRules := func(class string) {
		os.WriteFile(rules+".tmp", []byte("rules:\n  - {name: stat, match: {pathPrefix: /stat}, phi: true, class: "+class+", priority: critical}\n"), 0o600)
		os.Rename(rules+".tmp", rules)
	}
	writeRules("pharmacy.stat")
	sock := filepath.Join(dir, "extproc.sock")
	health := testutil.FreeAddr(t)
	auditLog := filepath.Join(dir, "audit.log")
	var stderr testutil.SyncBuffer
	o := options(&stderr)
	o.SVID.Service = "emr"
	o.ExtProc.Listen, o.ExtProc.HealthListen = "unix://"+sock, health
	o.ExtProc.Rules, o.ExtProc.RulesPoll = rules, 10*time.Millisecond
	o.ExtProc.AuditLog, o.ExtProc.AuditDurability = auditLog, "batch"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done, err := run.Start(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	testutil.Poll(t, 15*time.Second, "readyz", func() bool {
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
	calls := 0
	class := func() string {
		calls++
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
	testutil.Poll(t, 15*time.Second, "the bad file to be rejected", func() bool { return strings.Contains(stderr.String(), "previous rules stay in force") })
	if !strings.Contains(stderr.String(), "rules.yaml:2") {
		t.Errorf("reload error does not name file and line: %s", stderr.String())
	}
	if got := class(); got != "pharmacy.stat" {
		t.Fatalf("after a bad file: class %q, want the previous rules", got)
	}
	writeRules("pharmacy.urgent")
	testutil.Poll(t, 15*time.Second, "the good file to be loaded", func() bool { return class() == "pharmacy.urgent" })
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
	for _, m := range []string{"medmesh_audit_write_failures_total 0", "medmesh_audit_queue_full_total 0"} {
		if !strings.Contains(body.String(), m) {
			t.Errorf("metrics lack %q:\n%s", m, body.String())
		}
	}
	cancel() // as the command's SIGTERM does
	if err := <-done; err != nil {
		t.Fatalf("terminal error %v: %s", err, stderr.String())
	}
	// Every request was PHI and ended before the shutdown: the batched
	// trail, drained on the way out, holds one record for each.
	b, _ := os.ReadFile(auditLog)
	if n := strings.Count(string(b), `"resourceType":"AuditEvent"`); n != calls {
		t.Errorf("%d audit records after a clean shutdown, want %d (one per request)", n, calls)
	}
}

// TestStartStopsWhatStartedOnError: an SVID agent that cannot start
// (here, without --node-id) after the extension has started leaves
// nothing serving.
func TestStartStopsWhatStartedOnError(t *testing.T) {
	var logs testutil.SyncBuffer
	o := options(&logs)
	listen, health := testutil.FreeAddr(t), testutil.FreeAddr(t)
	o.ExtProc.Listen, o.ExtProc.HealthListen = listen, health
	o.SVID.Dir, o.SVID.Service = t.TempDir(), "emr"
	if _, err := run.Start(context.Background(), o); err == nil || !strings.Contains(err.Error(), "--node-id") {
		t.Fatalf("err %v, want --node-id named", err)
	}
	if !strings.Contains(logs.String(), "PHI ext_proc extension serving") {
		t.Fatalf("the extension did not start first: %s", logs.String())
	}
	for what, addr := range map[string]string{"ext_proc": listen, "health": health} {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("the %s server still holds its port: %v", what, err)
		}
		l.Close()
	}
}
