package main

import (
	"bytes"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"medmesh/internal/testutil"
	sidecarrun "medmesh/sidecar/run"
	"medmesh/sidecar/sched"
)

// TestSidecarRefusesBadInput: what sidecar/run refuses reaches stderr,
// and the command exits 2.
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

// TestSidecarFlags: the flags fill sidecar/run's options, with the
// defaults the command has always had.
func TestSidecarFlags(t *testing.T) {
	t.Setenv("MEDMESH_JOIN_TOKEN", "join-from-env")
	t.Setenv("MEDMESH_CONSUL_TOKEN", "consul-from-env")
	f, err := parseSidecarFlags(nil, &testutil.SyncBuffer{})
	if err != nil {
		t.Fatal(err)
	}
	want := sidecarrun.Options{
		ExtProc: sidecarrun.ExtProc{Listen: "127.0.0.1:15090", HealthListen: "127.0.0.1:15091", RulesPoll: 2 * time.Second,
			AuditDurability: "sync", AuditMaxBytes: 100 << 20, Limit: sched.DefaultLimit, TrustDomain: "medmesh.local"},
		Namespace: "default",
	}
	want.SVID.XDSAddress, want.SVID.JoinToken, want.SVID.ConsulToken = "127.0.0.1:15010", "join-from-env", "consul-from-env"
	if !reflect.DeepEqual(f.o, want) || f.logFormat != "text" {
		t.Errorf("defaults:\n got %+v\nwant %+v (log format %q)", f.o, want, f.logFormat)
	}

	f, err = parseSidecarFlags([]string{"--svid-dir", "/svid", "--xds-address", "cp:15010", "--node-id", "emr-0/svid", "--service", "emr",
		"--join-token", "j", "--k8s-token-file", "/token", "--consul-token", "c", "--workload-api", "unix:///w.sock", "--log-format", "json",
		"--extproc-listen", "unix:///x.sock", "--health-listen", ":1", "--rules", "/rules.yaml", "--rules-poll", "1s",
		"--audit-log", "/audit.log", "--audit-key-file", "/key", "--audit-durability", "batch", "--audit-max-bytes", "1000",
		"--limit", "7", "--adaptive", "--trust-domain", "hospital.example", "--namespace", "clinical", "--site", "site-a"}, &testutil.SyncBuffer{})
	if err != nil {
		t.Fatal(err)
	}
	want = sidecarrun.Options{
		WorkloadAPI: "unix:///w.sock",
		ExtProc: sidecarrun.ExtProc{Listen: "unix:///x.sock", HealthListen: ":1", Rules: "/rules.yaml", RulesPoll: time.Second,
			AuditLog: "/audit.log", AuditKeyFile: "/key", AuditDurability: "batch", AuditMaxBytes: 1000, Limit: 7, Adaptive: true,
			TrustDomain: "hospital.example", Site: "site-a"},
		Namespace: "clinical",
	}
	want.SVID.Dir, want.SVID.XDSAddress, want.SVID.NodeID, want.SVID.Service = "/svid", "cp:15010", "emr-0/svid", "emr"
	want.SVID.JoinToken, want.SVID.K8sTokenFile, want.SVID.ConsulToken = "j", "/token", "c"
	if !reflect.DeepEqual(f.o, want) || f.logFormat != "json" {
		t.Errorf("set:\n got %+v\nwant %+v (log format %q)", f.o, want, f.logFormat)
	}
}

// TestSidecarStopsOnSIGTERM: the command runs until SIGTERM, then exits 0.
func TestSidecarStopsOnSIGTERM(t *testing.T) {
	dir := t.TempDir()
	health := testutil.FreeAddr(t)
	var stderr testutil.SyncBuffer
	done := make(chan int, 1)
	go func() {
		done <- run([]string{"sidecar", "--extproc-listen", "unix://" + filepath.Join(dir, "extproc.sock"), "--health-listen", health,
			"--service", "emr"}, &bytes.Buffer{}, &stderr)
	}()
	testutil.Poll(t, 15*time.Second, "readyz", func() bool {
		resp, err := http.Get("http://" + health + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	syscall.Kill(os.Getpid(), syscall.SIGTERM) // caught by the command's NotifyContext
	if code := <-done; code != 0 {
		t.Fatalf("exit code %d: %s", code, stderr.String())
	}
}
