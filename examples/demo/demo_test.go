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
	"medmesh/internal/jaegertest"
)

// TestDemoRunsAndStopsCleanly runs the demo as `make demo` does, with real
// binaries, three real Consul datacenters peered on loopback and one round
// of the story, and checks what a user would: the calls succeed over mTLS
// at every site, every instance holds an SVID with its site, the caller
// without an intention is refused and the clinic's call to the hub's EMR
// held back by residency, the formulary fails over to the hub, north's
// uplink is cut (north carries on, its peers go stale) and restored with
// nothing pushed, and every process is gone and the run directory removed
// afterwards.
func TestDemoRunsAndStopsCleanly(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three Consul servers, three control planes and eleven services for about a minute")
	}
	consul, err := consulagent.FindBinary()
	if err != nil {
		t.Fatalf("%v: the demo needs a real Consul agent", err)
	}
	jaeger, err := jaegertest.FindBinary()
	if err != nil {
		t.Fatalf("%v: the demo starts a real Jaeger", err)
	}
	dir := t.TempDir()
	root := moduleRoot(t)
	bins := map[string]string{}
	for name, pkg := range map[string]string{"medmesh": "./cmd/medmesh", "clinical-service": "./examples/service", "demo": "./examples/demo",
		"vitals": "./examples/vitals/cmd/vitals", "telehealth-signal": "./examples/telehealth/cmd/telehealth-signal",
		"telehealth-turn": "./examples/telehealth/cmd/telehealth-turn", "telehealth-peer": "./examples/telehealth/cmd/telehealth-peer"} {
		bins[name] = filepath.Join(dir, name)
		cmd := exec.Command(goTool(), "build", "-o", bins[name], pkg)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", pkg, err, out)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bins["demo"],
		"--medmesh", bins["medmesh"], "--service-bin", bins["clinical-service"], "--bin-dir", dir,
		// Port 0: never collide with a control plane someone else runs.
		"--xds-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
		"--step", "5s", "--every", "3s", "--rounds", "1")
	cmd.Env = append(os.Environ(), "CONSUL_BIN="+consul, "JAEGER_BIN="+jaeger, "DEMO_SECONDS=", "DEMO_ROUNDS=", "DEMO_KEEP_LOGS=")
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
	if !strings.Contains(out, "the story has played 1 time(s) (--rounds): stopping everything") {
		t.Error("the demo did not stop after its one round")
	}

	m := regexp.MustCompile(`result: calls_ok=(\d+) calls_failed=(\d+) unexpected_exits=(\d+) leftover_processes=(\d+) refused_as_intended=(\d+) probe_problems=(\d+) pushes_after_reconnect=(-?\d+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatal("no result line")
	}
	ok, failed := atoi(t, m[1]), atoi(t, m[2])
	if ok < 500 {
		t.Errorf("only %d calls succeeded; want the mesh to carry traffic all along", ok)
	}
	// Instances leave by deregistering first and fail health checks while
	// still serving, every workload holds its SVID before it starts,
	// intentions are in place before the first inbound listener, and a
	// cut uplink leaves a site's own calls alone: no call of the story may
	// fail. The refusals are the probes', counted apart.
	if failed != 0 {
		t.Errorf("%d of %d calls failed; want none", failed, ok+failed)
	}
	if m[3] != "0" || m[4] != "0" {
		t.Errorf("unexpected exits %s, leftover processes %s; want 0 and 0", m[3], m[4])
	}
	if m[5] != "2" || m[6] != "0" {
		t.Errorf("probe calls refused as intended %s, probe problems %s; want both probes refused, no problem", m[5], m[6])
	}
	// Content-hash versions: the peerings coming back changes nothing
	// north's proxies hold, so nothing is sent.
	if m[7] != "0" {
		t.Errorf("xDS responses from north's control plane across the cut and the reconnection: %s; want 0", m[7])
	}
	for _, re := range []string{
		`==> refused as intended: billing-1 \(billing\) -> emr: PermissionDenied: .*\(server none \(no connection\)\)\. billing's own client refused it`,
		`==> held back as intended: his-probe \(his at north\) -> emr: Unavailable: .*"emr"`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("output does not match %q", re)
		}
	}

	// Identities: the hub's from the root, the clinics' from their own
	// intermediates, every SPIFFE ID naming its site.
	for _, want := range []string{"hospital root CA kept in", "intermediate CA made from the hub's root", "signs with its intermediate from", "mTLS: on (every hop"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	for _, in := range []struct{ id, svc, site string }{
		{"emr-1", "emr", "hub"}, {"imaging-2", "imaging", "hub"}, {"formulary-1", "formulary", "hub"},
		{"his-north", "his", "north"}, {"formulary-north", "formulary", "north"}, {"imaging-south", "imaging", "south"},
	} {
		if !regexp.MustCompile(`SVID ` + in.id + ` +spiffe://medmesh\.local/ns/default/svc/` + in.svc + `/site/` + in.site + ` `).MatchString(out) {
			t.Errorf("no SVID listed for %s at %s", in.id, in.site)
		}
	}
	// Servers saw their callers' SPIFFE IDs, with the callers' sites, and
	// only the ones intentions and residency allow: the hub's formulary
	// serves south's HIS; nothing from another site reaches a PHI service.
	for _, want := range []string{
		"emr-1           <- spiffe://medmesh.local/ns/default/svc/his/site/hub ",
		"formulary-1     <- spiffe://medmesh.local/ns/default/svc/his/site/south ",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	for _, line := range regexp.MustCompile(`(?m)^ +(emr-\d|imaging-\d|his-1) +<- .*$`).FindAllString(out, -1) {
		for _, bad := range []string{"plaintext", "svc/billing", "/site/north", "/site/south"} {
			if strings.Contains(line, bad) {
				t.Errorf("a hub PHI server answered a plaintext caller, billing or a caller from another site: %s", line)
			}
		}
	}
	// Each site's status at start: peers and residency decisions.
	for _, re := range []string{
		`peer north \(site north\): ACTIVE`,
		`site north: residency policy default\.rego`,
		`residency: emr at hub: held back \(refused for formulary, his, imaging, nurse-station, telehealth-signal, turn, vitals\)`,
		`residency: formulary at hub: routed here \(1 instances\)`,
		`residency condition: service "emr" has no healthy instance at site north`,
		`formulary-north/svid +formulary +svid-agent +- +ns/default/svc/formulary/site/north`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("output does not match %q", re)
		}
	}

	for _, want := range []string{
		"==> emr-2 stops", "emr-2        | deregistered from Consul", "==> emr-2 starts again",
		"==> formulary-north fails its health check", "formulary-north CRITICAL", "==> formulary-north recovers",
		"==> site north loses its uplink", "north noticed it is cut off",
		"==> site north's uplink is back", "north's peerings are ACTIVE again",
		"/debug/residency", "/ui/",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	between := func(from, to string) string {
		i, j := strings.Index(out, from), strings.Index(out, to)
		if i < 0 || j < i {
			t.Fatalf("%q does not come before %q", from, to)
		}
		return out[i:j]
	}
	// While emr-2 is stopped, callers are answered by emr-1 alone.
	if !regexp.MustCompile(`-> emr +ok +\d+ +failed +0 +answered by: emr-1 \d+\n`).MatchString(between("==> emr-2 stops", "==> emr-2 starts again")) {
		t.Error("no table shows emr answered by emr-1 alone while emr-2 was stopped")
	}
	// While north's formulary fails, north's calls cross to the hub's.
	if !regexp.MustCompile(`his-north +-> formulary +ok +\d+ +failed +0 +answered by: formulary-1 \d+\n`).MatchString(
		between("==> formulary-north fails", "==> formulary-north recovers")) {
		t.Error("no table shows his-north's formulary calls answered by the hub's formulary-1 while formulary-north failed")
	}
	// While north is cut off: its peers are stale but kept, its calls go
	// on, and the hub sees north stale.
	cut := between("==> site north loses its uplink", "==> site north's uplink is back")
	for _, re := range []string{
		`peer hub \(site hub\): FAILING, stale since .*: imports served as last heard of`,
		`peers: hub FAILING, stale for \d+s \(6 imported instances served\); south FAILING`,
		`peers: north FAILING, stale for \d+s \(2 imported instances served\); south ACTIVE`,
		`his-north +-> imaging +ok +\d+ +failed +0 +answered by: imaging-north \d+\n`,
	} {
		if !regexp.MustCompile(re).MatchString(cut) {
			t.Errorf("while north was cut off, the output does not match %q", re)
		}
	}

	// Realtime vitals at both clinics: frames through the mesh, and the
	// device at south resuming on the other vitals instance after the
	// one it streamed to is killed.
	for _, site := range []string{"north", "south"} {
		if !regexp.MustCompile(`realtime at ` + site + `, as last reported: vitals \(last second, device clock to nurse station\): alarm p99 .* [1-9]\d* frames; device: [1-9]\d* reliable sent`).MatchString(out) {
			t.Errorf("no realtime vitals figures for %s", site)
		}
	}
	kill := between("==> the vitals instance bed-south streams to is killed", "==> the killed vitals instance starts again")
	if !regexp.MustCompile(`killing vitals-south-[12] \(pid \d+\), which holds bed-south's stream`).MatchString(kill) ||
		!regexp.MustCompile(`device: \d+ reliable sent, \d+ acknowledged, 1 reconnects`).MatchString(kill) {
		t.Error("no table shows bed-south reconnected once after its vitals instance was killed")
	}
	// The video visit at north: set up through the mesh signalling, video
	// and vitals frames flowing, every frame's CRC good, kept up across
	// north's uplink cut (its signalling and relay are on the site).
	if !regexp.MustCompile(`telehealth call \(pion clinician and patient, signalling through the mesh\): connected, set up in [\d.]+ ms; [1-9]\d* video RTP packets, [1-9]\d* vitals frames on the DataChannel \(p99 [\d.]+ ms, 0 bad CRC\), 0 reconnects`).MatchString(cut) {
		t.Error("no table shows north's video visit connected, with video and vitals frames, while north was cut off")
	}
	if !strings.Contains(out, "realtime at north, as last reported:") || !strings.Contains(out, "nurse station      http://127.0.0.1:") {
		t.Error("the nurse stations' pages are not listed")
	}

	// The trace backend: started, its query API listed, and the control
	// planes' change traces in it while the demo ran.
	if !regexp.MustCompile(`traces +http://127\.0\.0\.1:\d+/api/traces\?service=medmesh-controlplane`).MatchString(out) {
		t.Error("the Jaeger query API is not listed under traces")
	}
	if n := len(regexp.MustCompile(`UI site \w+ +http://127\.0\.0\.1:\d+/ui `).FindAllString(out, -1)); n != 3 {
		t.Errorf("%d sites' status pages listed under where to look, want 3", n)
	}
	if !strings.Contains(out, "Jaeger (trace backend, in memory) up") {
		t.Error("the demo did not start Jaeger")
	}
	if !regexp.MustCompile(`traces in Jaeger \(of \d+ services reporting\): medmesh-controlplane [1-9]\d*, his [1-9]\d*, emr [1-9]\d*`).MatchString(out) {
		t.Error("the control planes' change traces and the services' request traces did not reach Jaeger")
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
