package main

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"medmesh/internal/consulagent"
)

// TestDemoRunsAndStopsCleanly runs the demo as `make demo` does, with real
// binaries, a real Consul and a short story, and checks what a user would:
// the calls succeed over mTLS, every instance holds an SVID, the caller
// without an intention is refused, the story's events happen and show, and
// every process is gone and the run directory removed afterwards.
func TestDemoRunsAndStopsCleanly(t *testing.T) {
	if testing.Short() {
		t.Skip("runs Consul, the control plane and five services for about 30s")
	}
	consul, err := consulagent.FindBinary()
	if err != nil {
		t.Skipf("%v: the demo needs a real Consul agent", err)
	}
	dir := t.TempDir()
	root := moduleRoot(t)
	bins := map[string]string{}
	for name, pkg := range map[string]string{"medmesh": "./cmd/medmesh", "clinical-service": "./examples/service", "demo": "./examples/demo"} {
		bins[name] = filepath.Join(dir, name)
		cmd := exec.Command(goTool(), "build", "-o", bins[name], pkg)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", pkg, err, out)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bins["demo"],
		"--medmesh", bins["medmesh"], "--service-bin", bins["clinical-service"],
		// Port 0: never collide with a control plane someone else runs.
		"--xds-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
		"--step", "5s", "--every", "3s")
	cmd.Env = append(os.Environ(), "CONSUL_BIN="+consul, "DEMO_SECONDS=26", "DEMO_KEEP_LOGS=")
	outb, err := cmd.CombinedOutput()
	out := string(outb)
	defer func() {
		if t.Failed() {
			t.Logf("demo output:\n%s", out)
		}
	}()
	if err != nil {
		t.Fatalf("demo: %v (want exit status 0)", err)
	}

	m := regexp.MustCompile(`result: calls_ok=(\d+) calls_failed=(\d+) unexpected_exits=(\d+) leftover_processes=(\d+) denied_as_intended=(\d+) probe_problems=(\d+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatal("no result line")
	}
	ok, failed := atoi(t, m[1]), atoi(t, m[2])
	if ok < 100 {
		t.Errorf("only %d calls succeeded; want the mesh to carry traffic all along", ok)
	}
	// Instances leave by deregistering first and fail health checks while
	// still serving, every workload holds its SVID before it starts, and
	// intentions are in place before the first inbound listener: no call
	// of the story may fail. The one refusal is the probe's, counted apart.
	if failed != 0 {
		t.Errorf("%d of %d calls failed; want none", failed, ok+failed)
	}
	if m[3] != "0" || m[4] != "0" {
		t.Errorf("unexpected exits %s, leftover processes %s; want 0 and 0", m[3], m[4])
	}
	// The story's second round may start another probe just before the
	// end: one or two refusals, never a problem.
	if (m[5] != "1" && m[5] != "2") || m[6] != "0" {
		t.Errorf("calls denied as intended %s, probe problems %s; want the probe's calls refused, no problem", m[5], m[6])
	}
	if !regexp.MustCompile(`==> refused as intended: billing-1 \(billing\) -> emr: PermissionDenied: .*server spiffe://medmesh\.local/ns/default/svc/emr`).MatchString(out) {
		t.Error("no line shows billing's call to emr refused with PermissionDenied after an mTLS handshake")
	}

	// mTLS is on, and every instance holds an SVID for its own service.
	for _, want := range []string{"mTLS on, CA root in", "mTLS: on (every hop", "mTLS: on. Every call is mutual TLS"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	for _, in := range []struct{ id, svc string }{{"emr-1", "emr"}, {"emr-2", "emr"}, {"imaging-1", "imaging"}, {"imaging-2", "imaging"}, {"his-1", "his"}} {
		if !regexp.MustCompile(`SVID ` + in.id + ` +spiffe://medmesh\.local/ns/default/svc/` + in.svc + ` `).MatchString(out) {
			t.Errorf("no SVID listed for %s", in.id)
		}
	}
	// The servers saw their callers' SPIFFE IDs in client certificates,
	// and only the ones intentions allow.
	for _, want := range []string{
		"emr-1      <- spiffe://medmesh.local/ns/default/svc/his ",
		"imaging-1  <- spiffe://medmesh.local/ns/default/svc/emr ",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if regexp.MustCompile(`<- .*(plaintext|svc/billing)`).MatchString(out) {
		t.Error("a server answered a plaintext caller or billing")
	}
	// The status table, with the sidecars (SVID agents) as proxies.
	for _, re := range []string{`ID +SERVICE +KIND`, `emr-1/svid +emr +svid-agent`} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("output does not match %q", re)
		}
	}

	for _, want := range []string{
		"==> emr-2 stops", "emr-2        | deregistered from Consul",
		"==> emr-2 starts again",
		"==> imaging-2 fails its health check", "imaging-2 CRITICAL",
		"==> imaging-2 recovers",
		"$ medmesh status --admin",
		"/debug/config?node=", "/ui/",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	// While emr-2 is stopped, callers are answered by emr-1 alone.
	stopped := out[strings.Index(out, "==> emr-2 stops"):strings.Index(out, "==> emr-2 starts again")]
	if !regexp.MustCompile(`-> emr +ok +\d+ +failed +0 +answered by: emr-1 \d+\n`).MatchString(stopped) {
		t.Errorf("no table shows emr answered by emr-1 alone while emr-2 was stopped")
	}

	// Nothing the demo started may outlive it.
	for _, pm := range regexp.MustCompile(`pid=(\d+)`).FindAllStringSubmatch(out, -1) {
		pid := atoi(t, pm[1])
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("process %d is still running after the demo", pid)
		}
	}
	if rm := regexp.MustCompile(`removed (/\S+)`).FindStringSubmatch(out); rm == nil {
		t.Error("the run directory was not removed")
	} else if _, err := os.Stat(rm[1]); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s still exists", rm[1])
	}
}

func moduleRoot(t *testing.T) string {
	t.Helper()
	out, err := exec.Command(goTool(), "env", "GOMOD").Output()
	if err != nil || strings.TrimSpace(string(out)) == "" {
		t.Fatalf("cannot find the module root: %v", err)
	}
	return filepath.Dir(strings.TrimSpace(string(out)))
}

// goTool is the go command running this test, so the binaries are built
// with the same toolchain.
func goTool() string {
	if p := filepath.Join(os.Getenv("GOROOT"), "bin", "go"); os.Getenv("GOROOT") != "" {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return "go"
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
