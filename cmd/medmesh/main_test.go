package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"medmesh/api/admin"
)

func runCmd(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestUnknownCommand(t *testing.T) {
	code, _, stderr := runCmd("frobnicate")
	if code != 2 || !strings.Contains(stderr, `unknown command "frobnicate"`) || !strings.Contains(stderr, "controlplane") {
		t.Fatalf("code %d, stderr %q", code, stderr)
	}
}

func TestBootstrapCommand(t *testing.T) {
	code, out, stderr := runCmd("bootstrap", "--node-id", "emr-1", "--service", "emr")
	if code != 0 {
		t.Fatalf("code %d: %s", code, stderr)
	}
	for _, want := range []string{"id: emr-1", "cluster: emr", "DELTA_GRPC", "medmesh_xds"} {
		if !strings.Contains(out, want) {
			t.Errorf("Envoy bootstrap lacks %q:\n%s", want, out)
		}
	}
	code, out, _ = runCmd("bootstrap", "--node-id", "emr-1", "--service", "emr", "--join-token", "t0ken")
	if code != 0 || !strings.Contains(out, "x-medmesh-join-token") || !strings.Contains(out, "t0ken") {
		t.Errorf("Envoy bootstrap with a join token:\n%s", out)
	}
	code, out, stderr = runCmd("bootstrap", "--proxyless", "--node-id", "his-1", "--service", "his", "--svid-dir", "/run/svid")
	if code != 0 {
		t.Fatalf("code %d: %s", code, stderr)
	}
	var b map[string]any
	if err := json.Unmarshal([]byte(out), &b); err != nil {
		t.Fatalf("proxyless bootstrap is not JSON: %v\n%s", err, out)
	}
	if !strings.Contains(out, `"server_listener_resource_name_template": "medmesh/inbound/%s"`) || !strings.Contains(out, "file_watcher") {
		t.Errorf("proxyless bootstrap:\n%s", out)
	}
	if code, _, stderr := runCmd("bootstrap"); code != 2 || !strings.Contains(stderr, "--node-id is required") {
		t.Errorf("missing node id: code %d, %q", code, stderr)
	}
	if code, _, stderr := runCmd("bootstrap", "--node-id", "x", "--xds-address", "nohostport"); code != 2 || !strings.Contains(stderr, "--xds-address") {
		t.Errorf("bad address: code %d, %q", code, stderr)
	}
}

func TestControlPlaneRefusesBadFlags(t *testing.T) {
	cat := filepath.Join(t.TempDir(), "catalog.yaml")
	os.WriteFile(cat, []byte("services: []\n"), 0o600)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--policies", "/does/not/exist"}, "want a directory of policy YAML files"},
		{[]string{"--kubeconfig", "/does/not/exist.conf"}, "--kubeconfig: stat /does/not/exist.conf"},
		{[]string{"--kubeconfig", "/does/not/exist.conf", "--policies", "/tmp"}, "policies come from one source"},
		{[]string{"--catalog", cat, "--consul", "http://127.0.0.1:8500"}, "both given"},
		{[]string{"--consul", ""}, "nothing to serve"},
		{[]string{"--catalog", "/does/not/exist.yaml", "--consul", ""}, "--catalog"},
		{[]string{"--catalog", cat, "--consul", "", "--envoy-otlp-address", "collector"}, "--envoy-otlp-address \"collector\": want host:port"},
		{[]string{"--catalog", cat, "--consul", "", "--envoy-trace-sampling", "5"}, "--envoy-otlp-address is not"},
		{[]string{"--catalog", cat, "--consul", "", "--trace-query-url", "jaeger:16686"}, "--trace-query-url"},
	} {
		code, _, stderr := runCmd(append([]string{"controlplane"}, tc.args...)...)
		if code != 2 || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: code %d, stderr %q, want %q", tc.args, code, stderr, tc.want)
		}
	}
}

func TestStatusTableShowsNACK(t *testing.T) {
	pr := &admin.ProxiesResponse{
		Ready: true, Services: 3, Serving: "consul", MTLS: true,
		UnresolvedIntentions: []string{"labs -> emr: source is not registered"},
		Permissive:           []string{"scheduling"},
		Source:               admin.SourceStatus{Synced: true},
		Proxies: []admin.Proxy{{
			ID: "emr-1", Service: "emr", Kind: "envoy", Transport: "delta",
			Types: map[string]admin.TypeStatus{
				"CDS": {Sent: "aaaaaaaa22222222", Acked: "aaaaaaaa11111111"},
				"LDS": {Sent: "bbbbbbbb33333333", Acked: "bbbbbbbb33333333"},
			},
			LastNACK: &admin.NACK{TypeURL: "type.googleapis.com/envoy.config.cluster.v3.Cluster", Version: "aaaaaaaa22222222",
				Message: "cluster imaging:\n maglev unsupported", At: time.Now()},
			Identity: "spiffe://medmesh.local/ns/default/svc/emr"}, {
			ID: "his-1", Service: "his", Kind: "envoy", Transport: "sotw",
			Identity: `refused: the consul ACL token may not write service "his"`}, {
			ID: "lab-1", Service: "lab", Kind: "proxyless", Transport: "sotw",
			Problems: []string{`node "lab-1" asked for server listener "medmesh/inbound/0.0.0.0:9999" (it listens on 0.0.0.0:9999): no instance`}}},
	}
	var b bytes.Buffer
	PrintStatus(&b, pr)
	out := b.String()
	for _, want := range []string{"ready=true services=3 serving=consul", "emr-1", "11111111*", "33333333", "Cluster 22222222: cluster imaging: maglev unsupported", "mTLS: on", "unresolved intention: labs -> emr", "permissive (plaintext accepted beside mTLS): scheduling",
		"ns/default/svc/emr", "refused: the consul ACL token may not",
		`problem: node "lab-1" asked for server listener "medmesh/inbound/0.0.0.0:9999" (it listens on 0.0.0.0:9999)`} {
		if !strings.Contains(out, want) {
			t.Errorf("status table lacks %q:\n%s", want, out)
		}
	}
	b.Reset()
	PrintStatus(&b, &admin.ProxiesResponse{Ready: true, Serving: "consul"})
	if out := b.String(); !strings.Contains(out, "mTLS: OFF") || !strings.Contains(out, "--mtls=false") || strings.Contains(out, "start with --mtls") {
		t.Errorf("status of a plaintext mesh:\n%s", out)
	}
}

// Peered sites are listed with their state: an unreachable peer says
// since when its imports are served as last heard of, or withdrawn.
func TestStatusShowsPeers(t *testing.T) {
	since := time.Date(2026, 11, 29, 8, 0, 0, 0, time.UTC)
	var b bytes.Buffer
	PrintStatus(&b, &admin.ProxiesResponse{Ready: true, Serving: "consul", Source: admin.SourceStatus{Synced: true, Peers: []admin.Peer{
		{Name: "hub", Site: "hub", State: "ACTIVE", Imported: []string{"emr", "imaging"}, Instances: 3},
		{Name: "site-b", Site: "site-b", State: "FAILING", Imported: []string{"vitals"}, Instances: 2, StaleSince: since},
		{Name: "site-c", Site: "site-c", State: "FAILING", StaleSince: since, Withdrawn: true},
	}}})
	out := b.String()
	for _, want := range []string{
		"peer hub (site hub): ACTIVE; imports 3 instances of emr, imaging",
		"peer site-b (site site-b): FAILING, stale since 2026-11-29T08:00:00Z: imports served as last heard of; imports 2 instances of vitals",
		"peer site-c (site site-c): FAILING, stale since 2026-11-29T08:00:00Z: imports withdrawn; imports 0 instances of -",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
}

func TestControlPlaneRefusesBadCA(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "key.pem")
	os.WriteFile(key, []byte("x"), 0o644)
	code, _, stderr := runCmd("controlplane", "--consul", "", "--catalog", key, "--mtls", "--ca-cert", "/no/such/ca.pem", "--ca-key", key)
	if code != 2 || !strings.Contains(stderr, "/no/such/ca.pem") {
		t.Fatalf("code %d, stderr %q", code, stderr)
	}
	code, _, stderr = runCmd("controlplane", "--consul", "", "--catalog", key, "--mtls")
	if code != 2 || !strings.Contains(stderr, "no CA") {
		t.Fatalf("--mtls without a CA: code %d, stderr %q", code, stderr)
	}
}

// mTLS is the default: without a CA source the control plane refuses to
// start and names every way out; plaintext must be asked for and is
// announced loudly.
func TestControlPlaneMTLSByDefault(t *testing.T) {
	cat := filepath.Join(t.TempDir(), "catalog.yaml")
	os.WriteFile(cat, []byte("services: []\n"), 0o600)
	code, _, stderr := runCmd("controlplane", "--consul", "", "--catalog", cat)
	if code != 2 {
		t.Errorf("no CA and no --mtls=false: code %d, want 2 (refused)", code)
	}
	for _, want := range []string{"no CA", "--state-dir", "--ca-cert", "--ca-key", "--mtls=false", "development only"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("refusal lacks %q: %q", want, stderr)
		}
	}
	if strings.Contains(stderr, "PLAINTEXT") {
		t.Errorf("refused start warns of plaintext, as if it ran: %q", stderr)
	}

	// An invalid xDS port stops the run right after the start-up
	// messages, so the test need not serve anything.
	code, _, stderr = runCmd("controlplane", "--consul", "", "--catalog", cat, "--mtls=false", "--xds-listen", "127.0.0.1:99999")
	if code != 1 || !strings.Contains(stderr, "xds listen") {
		t.Fatalf("--mtls=false with a bad xDS port: code %d, stderr %q", code, stderr)
	}
	for _, want := range []string{"level=WARN", "PLAINTEXT MESH (--mtls=false)", "Development only", "NEVER"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("plaintext start lacks %q: %q", want, stderr)
		}
	}

	// With a state directory mTLS starts with a self-signed root, and
	// there is no plaintext warning.
	code, _, stderr = runCmd("controlplane", "--consul", "", "--catalog", cat, "--state-dir", t.TempDir(), "--xds-listen", "127.0.0.1:99999")
	if code != 1 || !strings.Contains(stderr, "mTLS on") || strings.Contains(stderr, "PLAINTEXT") {
		t.Errorf("default mTLS with --state-dir: code %d, stderr %q", code, stderr)
	}
}

// At a site, status names the residency policy, what other sites' services
// are routed or held back (and for whom), and services that cannot be
// served here.
func TestStatusShowsResidency(t *testing.T) {
	var b bytes.Buffer
	PrintResidency(&b, &admin.ResidencyResponse{Site: "site-a",
		Policy: admin.ResidencyPolicy{Name: "residency.rego", Digest: "0123abcd", LastError: "residency.rego:7: rego_parse_error"},
		Decisions: []admin.SiteDecision{
			{Service: "imaging", Site: "hub", Routed: true, Instances: 2},
			{Service: "emr", Site: "hub", PHI: true, Denied: []admin.DeniedCall{{Source: "his", Reasons: []string{"emr is PHI: it stays at site hub"}}}},
		},
		Conditions: []admin.ResidencyCondition{{Service: "records", Sites: []string{"hub"}, Message: `service "records" has no healthy instance at site site-a`}},
	})
	out := b.String()
	for _, want := range []string{
		"site site-a: residency policy residency.rego (0123abcd)",
		"residency policy error (the policy above stays in force): residency.rego:7",
		"residency: imaging at hub: routed here (2 instances)",
		"residency: emr at hub: held back (refused for his): emr is PHI",
		`residency condition: service "records" has no healthy instance`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	b.Reset()
	PrintResidency(&b, &admin.ResidencyResponse{})
	if b.Len() != 0 {
		t.Errorf("single-site status printed residency: %s", b.String())
	}
}

// A residency policy that does not compile stops the control plane at
// start, naming file and line; without --site the flag is refused.
func TestControlPlaneRefusesBadResidencyPolicy(t *testing.T) {
	dir := t.TempDir()
	catalog := filepath.Join(dir, "catalog.yaml")
	os.WriteFile(catalog, []byte("services: []\n"), 0o644)
	bad := filepath.Join(dir, "residency.rego")
	os.WriteFile(bad, []byte("package medmesh.residency\n\ndeny if {\n"), 0o644)
	code, _, stderr := runCmd("controlplane", "--consul", "", "--catalog", catalog, "--mtls=false", "--site", "site-a",
		"--residency-policy", bad, "--xds-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0")
	if code != 2 || !strings.Contains(stderr, "residency.rego:") {
		t.Fatalf("code %d, stderr %q: want 2 and file:line", code, stderr)
	}
	code, _, stderr = runCmd("controlplane", "--consul", "", "--catalog", catalog, "--mtls=false", "--residency-policy", bad)
	if code != 2 || !strings.Contains(stderr, "--site") {
		t.Fatalf("without --site: code %d, stderr %q", code, stderr)
	}
}
