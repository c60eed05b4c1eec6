// Package monitoring holds medmesh's Grafana dashboard and Prometheus
// alert rules (deploy/monitoring); its test checks them against the
// metrics medmesh really exports.
package monitoring

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/peer"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	"medmesh/certs"
	"medmesh/controlplane"
	"medmesh/internal/simproxy"
	"medmesh/internal/testutil"
	"medmesh/registry"
	"medmesh/sidecar/run"
	"medmesh/sidecar/sched"
)

// TestMetricsRulesAndDashboard runs a control plane (mTLS, a proxy that
// got an SVID and NACKed) and a sidecar (one request through ext_proc),
// scrapes both /metrics endpoints and fails on anything promlint flags;
// then checks the alert rules and the dashboard with Prometheus's own
// parsers against the names the two export (tools/promcheck), and
// evaluates every alert (tools/promcheck's test).
func TestMetricsRulesAndDashboard(t *testing.T) {
	cpText, cpNames := controlPlaneMetrics(t)
	scText := sidecarMetrics(t)
	names := map[string]bool{}
	for _, n := range cpNames {
		names[n] = true
	}
	for what, text := range map[string][]byte{"control plane": cpText, "sidecar": scText} {
		problems, err := promlint.New(bytes.NewReader(text)).Lint()
		if err != nil {
			t.Fatalf("%s /metrics: %v", what, err)
		}
		for _, p := range problems {
			t.Errorf("%s /metrics: promlint: %s: %s", what, p.Metric, p.Text)
		}
		for _, n := range families(t, text) {
			names[n] = true
		}
	}
	// What the dashboard and alerts are for must be exported (a rename
	// fails here and in promcheck).
	for _, n := range []string{"medmesh_xds_push_latency_seconds", "medmesh_xds_convergence_seconds",
		"medmesh_xds_nacks_total", "medmesh_xds_proxies_nacking", "medmesh_xds_standing_nack_oldest_timestamp_seconds",
		"medmesh_xds_connected_proxies", "medmesh_svid_earliest_expiry_timestamp_seconds",
		"medmesh_svid_earliest_expiry_lifetime_seconds", "medmesh_sidecar_shed_requests_total",
		"medmesh_sidecar_audit_errors_total", "medmesh_admin_audit_write_failures_total", "medmesh_peer_stale",
		"medmesh_peer_stale_since_timestamp_seconds", "medmesh_audit_write_failures_total", "medmesh_audit_queue_full_total"} {
		if !names[n] {
			t.Errorf("%s is not exported", n)
		}
	}
	dash, err := os.ReadFile("dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"medmesh_xds_push_latency_seconds_bucket", "medmesh_xds_convergence_seconds_bucket",
		"medmesh_xds_nacks_total", "medmesh_xds_connected_proxies", "medmesh_svid_earliest_expiry_timestamp_seconds",
		"medmesh_sidecar_shed_requests_total", "medmesh_sidecar_audit_errors_total", "medmesh_peer_stale",
		"medmesh_audit_write_failures_total", "medmesh_audit_queue_full_total"} {
		if !bytes.Contains(dash, []byte(n)) {
			t.Errorf("the dashboard has no panel on %s", n)
		}
	}

	list := filepath.Join(t.TempDir(), "metrics.txt")
	sorted := slices.Sorted(func(yield func(string) bool) {
		for n := range names {
			if !yield(n) {
				return
			}
		}
	})
	if err := os.WriteFile(list, []byte(strings.Join(sorted, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	root, _ := filepath.Abs("../..")
	promcheck(t, "run", ".", "-rules", filepath.Join(root, "deploy/monitoring/prometheusrule.yaml"),
		"-dashboard", filepath.Join(root, "deploy/monitoring/dashboard.json"), "-metrics", list, "-root", root)
	promcheck(t, "test", "-count=1", ".")
}

// promcheck runs the go command in tools/promcheck, a module of its own.
func promcheck(t *testing.T, args ...string) {
	t.Helper()
	cmd := exec.Command("go", args...)
	cmd.Dir = filepath.Join("..", "..", "tools", "promcheck")
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=readonly")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Errorf("go %s in tools/promcheck: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// TestKustomization renders deploy/monitoring as `kubectl apply -k`
// would: the PrometheusRule and the dashboard's ConfigMap, labelled for
// Grafana's dashboard sidecar, holding dashboard.json as it is.
func TestKustomization(t *testing.T) {
	fs := filesys.MakeFsInMemory()
	for _, f := range []string{"kustomization.yaml", "prometheusrule.yaml", "dashboard.json"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		fs.WriteFile(filepath.Join("/m", f), b)
	}
	rm, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(fs, "/m")
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, r := range rm.Resources() {
		kinds = append(kinds, r.GetKind()+"/"+r.GetNamespace()+"/"+r.GetName())
		if r.GetKind() == "ConfigMap" {
			if r.GetLabels()["grafana_dashboard"] != "1" {
				t.Errorf("dashboard ConfigMap labels %v, want grafana_dashboard=1", r.GetLabels())
			}
			data := r.GetDataMap()["medmesh.json"]
			var d map[string]any
			if err := json.Unmarshal([]byte(data), &d); err != nil || d["uid"] != "medmesh-overview" {
				t.Errorf("dashboard in the ConfigMap: %v (uid %v)", err, d["uid"])
			}
		}
	}
	slices.Sort(kinds)
	want := []string{"ConfigMap/medmesh-system/medmesh-grafana-dashboard", "PrometheusRule/medmesh-system/medmesh"}
	if !slices.Equal(kinds, want) {
		t.Errorf("rendered %v, want %v", kinds, want)
	}
}

// controlPlaneMetrics runs a control plane as `medmesh controlplane
// --dev` does (its registry with the Go and process collectors), with a
// proxy that got an SVID and NACKed clusters, and returns its /metrics
// and every metric name its registry describes: the peer gauges exist
// only with Consul peerings, which this test does not make.
func controlPlaneMetrics(t *testing.T) ([]byte, []string) {
	dir := t.TempDir()
	catalog := filepath.Join(dir, "catalog.yaml")
	os.WriteFile(catalog, []byte("services:\n- name: emr\n  kind: emr\n  instances:\n  - {id: emr-1, address: 10.0.0.1, port: 9101}\n  - {id: emr-2, address: 10.0.0.2, port: 9101}\n"), 0o644)
	ca, err := certs.New(certs.Options{TrustDomain: "medmesh.local", StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	log := slog.New(slog.DiscardHandler)
	cp, err := controlplane.New(controlplane.Options{Logger: log, Registry: reg, Identities: ca, Dev: true,
		Source:    &registry.File{Path: catalog, Interval: 20 * time.Millisecond, Logger: log},
		XDSListen: "127.0.0.1:0", AdminListen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cp.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	const cds = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
	tr := cp.XDS().Tracker()
	pctx := peer.NewContext(ctx, &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5000}})
	node := &corev3.Node{Id: "emr-1", Cluster: "emr"}
	tr.OnStreamOpen(pctx, 1<<40, cds)
	t.Cleanup(func() { tr.OnStreamClosed(1<<40, node) })
	req := &discoveryv3.DiscoveryRequest{Node: node, TypeUrl: cds}
	tr.OnStreamRequest(1<<40, req)
	tr.OnStreamResponse(pctx, 1<<40, req, &discoveryv3.DiscoveryResponse{TypeUrl: cds, Nonce: "n1", VersionInfo: "v1"})
	tr.OnStreamRequest(1<<40, &discoveryv3.DiscoveryRequest{Node: node, TypeUrl: cds, ResponseNonce: "n1",
		ErrorDetail: &rpcstatus.Status{Message: "bad cluster"}})

	// And a proxy that speaks ADS over gRPC and ACKs: its pushes are
	// timed and converge.
	conn, err := grpc.NewClient(cp.XDSAddr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := simproxy.Start(ctx, conn, simproxy.Options{NodeID: "emr-2", Cluster: "emr"}); err != nil {
		t.Fatal(err)
	}

	url := "http://" + cp.AdminAddr().String() + "/metrics"
	var text []byte
	testutil.Poll(t, 15*time.Second, "SVIDs, the NACK and a converged push in /metrics", func() bool {
		text = get(t, url)
		return bytes.Contains(text, []byte("medmesh_svid_earliest_expiry_timestamp_seconds ")) &&
			bytes.Contains(text, []byte(`medmesh_xds_proxies_nacking{type="CDS"} 1`)) &&
			!bytes.Contains(text, []byte("medmesh_xds_convergence_seconds_count 0")) &&
			bytes.Contains(text, []byte(`medmesh_xds_push_latency_seconds_count{type="LDS"}`))
	})
	descs := make(chan *prometheus.Desc)
	go func() { reg.Describe(descs); close(descs) }()
	var names []string
	fqName := regexp.MustCompile(`^Desc\{fqName: "([^"]+)"`)
	for d := range descs {
		if m := fqName.FindStringSubmatch(d.String()); m != nil {
			names = append(names, m[1])
		}
	}
	if !slices.Contains(names, "medmesh_peer_stale") {
		t.Fatalf("the control plane's registry describes no medmesh_peer_stale: %v", names)
	}
	return text, names
}

// sidecarMetrics runs `medmesh sidecar`'s extension, sends one request
// through ext_proc, and returns its /metrics.
func sidecarMetrics(t *testing.T) []byte {
	dir := t.TempDir()
	sock, health := filepath.Join(dir, "extproc.sock"), testutil.FreeAddr(t)
	o := run.Options{Namespace: "default", Logger: slog.New(slog.DiscardHandler),
		ExtProc: run.ExtProc{Listen: "unix://" + sock, HealthListen: health, RulesPoll: 2 * time.Second,
			// A batched trail: the sidecar then exports its writer's
			// counters, which the audit alert and panel watch.
			AuditLog: filepath.Join(dir, "audit.log"), AuditDurability: "batch", AuditMaxBytes: 100 << 20,
			Limit: sched.DefaultLimit, TrustDomain: "medmesh.local"}}
	o.SVID.Service = "emr"
	ctx, cancel := context.WithCancel(context.Background())
	done, err := run.Start(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); <-done })
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	s, err := extprocv3.NewExternalProcessorClient(conn).Process(ctx)
	if err != nil {
		t.Fatal(err)
	}
	hdr := func(kv ...string) *extprocv3.HttpHeaders {
		m := &corev3.HeaderMap{}
		for i := 0; i+1 < len(kv); i += 2 {
			m.Headers = append(m.Headers, &corev3.HeaderValue{Key: kv[i], RawValue: []byte(kv[i+1])})
		}
		return &extprocv3.HttpHeaders{Headers: m}
	}
	s.Send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: hdr(":method", "GET", ":path", "/fhir/Observation")}})
	if _, err := s.Recv(); err != nil {
		t.Fatal(err)
	}
	s.Send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: hdr(":status", "200")}})
	if _, err := s.Recv(); err != nil {
		t.Fatal(err)
	}
	s.CloseSend()
	var text []byte
	testutil.Poll(t, 15*time.Second, "the request in the sidecar's /metrics", func() bool {
		text = get(t, "http://"+health+"/metrics")
		return bytes.Contains(text, []byte("medmesh_sidecar_requests_total{")) &&
			bytes.Contains(text, []byte("medmesh_sidecar_queue_wait_seconds_bucket{"))
	})
	return text
}

func get(t *testing.T, url string) []byte {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return nil // not serving yet: the caller polls
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return b
}

// families are the metric family names in a text exposition.
func families(t *testing.T, text []byte) []string {
	t.Helper()
	p := expfmt.NewTextParser(model.LegacyValidation)
	mfs, err := p.TextToMetricFamilies(bytes.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for n := range mfs {
		out = append(out, n)
	}
	return out
}
