package controlplane_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/peer"

	"medmesh/controlplane"
	"medmesh/controlplane/policy"
	"medmesh/registry"
)

// TestAdminEndpointsJSONKeys reads /debug/proxies, /debug/policies,
// /debug/config and POST /join-tokens from a running control plane, with
// a proxy that NACKed and a policy that is not accepted, and checks every
// object's keys against the admin API's names: what TestAdminJSONGolden
// pins for the conversion, end to end through the handlers.
func TestAdminEndpointsJSONKeys(t *testing.T) {
	dir := t.TempDir()
	catalog, policies := filepath.Join(dir, "catalog.yaml"), filepath.Join(dir, "policies")
	writeFile(t, catalog, "services:\n- name: emr\n  kind: emr\n  instances:\n  - {id: emr-1, address: 10.0.0.1, port: 9101}\n")
	writeFile(t, filepath.Join(policies, "route.yaml"), `apiVersion: policy.medmesh.io/v1alpha1
kind: MeshRoute
metadata: {name: nowhere}
spec:
  service: nosuch
  rules:
  - destinations: [{subset: {version: v2}}]
`)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cp, err := controlplane.New(controlplane.Options{
		Logger: log, Source: &registry.File{Path: catalog, Interval: 20 * time.Millisecond, Logger: log},
		Policies:  &policy.Dir{Path: policies, Interval: 20 * time.Millisecond, Logger: log},
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

	// A proxy that connects, is sent a version and rejects it, through
	// the tracker's callbacks as the xDS server calls them.
	const cds = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
	tr := cp.XDS().Tracker()
	pctx := peer.NewContext(ctx, &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5000}})
	node := &corev3.Node{Id: "emr-1", Cluster: "emr"}
	req := &discoveryv3.DiscoveryRequest{Node: node, TypeUrl: cds}
	if err := tr.OnStreamOpen(pctx, 1<<40, cds); err != nil {
		t.Fatal(err)
	}
	tr.OnStreamRequest(1<<40, req)
	tr.OnStreamResponse(pctx, 1<<40, req, &discoveryv3.DiscoveryResponse{TypeUrl: cds, Nonce: "n1", VersionInfo: "v1"})
	tr.OnStreamRequest(1<<40, &discoveryv3.DiscoveryRequest{Node: node, TypeUrl: cds, ResponseNonce: "n1",
		ErrorDetail: &rpcstatus.Status{Message: "bad cluster"}})
	defer tr.OnStreamClosed(1<<40, node)

	var px map[string]any
	waitFor(t, func() error {
		px = getJSON(t, base+"/debug/proxies")
		if px["ready"] != true {
			return errors.New("not ready")
		}
		if rows, _ := px["proxies"].([]any); len(rows) != 1 || rows[0].(map[string]any)["published"] == nil {
			return errors.New("proxy not published yet")
		}
		return nil
	})
	checkKeys(t, "/debug/proxies", px, []string{"ready", "source", "serving", "services", "mtls", "proxies"},
		"error", "warnings", "unresolvedIntentions", "permissive")
	checkKeys(t, "/debug/proxies source", px["source"], []string{"synced", "services"}, "lastError", "lastErrorAt", "lastChange")
	row := px["proxies"].([]any)[0]
	checkKeys(t, "/debug/proxies row", row,
		[]string{"id", "service", "kind", "peer", "transport", "connectedAt", "types", "lastNack", "nacks", "published", "scope"}, "identity")
	checkKeys(t, "/debug/proxies lastNack", row.(map[string]any)["lastNack"], []string{"typeUrl", "version", "message", "at"})
	checkKeys(t, "/debug/proxies types.CDS", row.(map[string]any)["types"].(map[string]any)["CDS"], []string{"sent"}, "acked", "ackedAt")

	var pol map[string]any
	waitFor(t, func() error {
		if pol = getJSON(t, base+"/debug/policies"); pol["resolved"] != true {
			return errors.New("policies not resolved yet")
		}
		return nil
	})
	checkKeys(t, "/debug/policies", pol, []string{"source", "resolved", "objects"}, "errors")
	objs, _ := pol["objects"].([]any)
	if len(objs) != 1 {
		t.Fatalf("/debug/policies objects = %v, want the one route", pol["objects"])
	}
	checkKeys(t, "/debug/policies object", objs[0], []string{"kind", "namespace", "name", "source", "conditions"},
		"service", "generation")
	conds, _ := objs[0].(map[string]any)["conditions"].([]any)
	if len(conds) == 0 {
		t.Fatalf("/debug/policies object without conditions: %v", objs[0])
	}
	for _, c := range conds {
		checkKeys(t, "/debug/policies condition", c, []string{"type", "status", "lastTransitionTime", "reason", "message"},
			"observedGeneration")
	}

	cfg := getJSON(t, base+"/debug/config?node=emr-1")
	checkKeys(t, "/debug/config", cfg, []string{"node", "resources", "versions", "scope"})
	checkKeys(t, "/debug/config scope", cfg["scope"], []string{"service", "services", "included"}, "explicit", "excluded")
	scope := getJSON(t, base+"/debug/scope?service=emr")
	checkKeys(t, "/debug/scope", scope, []string{"service", "services", "included"}, "explicit", "excluded")
	for _, e := range scope["included"].([]any) {
		checkKeys(t, "/debug/scope entry", e, []string{"service", "reason"})
	}

	resp, err := http.Post(base+"/join-tokens?service=emr", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var tok map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&tok); err != nil {
		t.Fatal(err)
	}
	checkKeys(t, "/join-tokens", tok, []string{"token", "service", "namespace", "expires"})
}

// checkKeys fails unless obj is a JSON object holding every key of
// always and nothing beyond always and maybe (the omitempty fields).
func checkKeys(t *testing.T, what string, obj any, always []string, maybe ...string) {
	t.Helper()
	m, ok := obj.(map[string]any)
	if !ok {
		t.Errorf("%s: %T, want a JSON object", what, obj)
		return
	}
	for _, k := range always {
		if _, ok := m[k]; !ok {
			t.Errorf("%s lacks %q: %v", what, k, m)
		}
	}
	for k := range m {
		if !slices.Contains(always, k) && !slices.Contains(maybe, k) {
			t.Errorf("%s has %q, not part of the admin API", what, k)
		}
	}
}

func getJSON(t *testing.T, url string) map[string]any {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: %s %s", url, resp.Status, b)
	}
	var m map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return m
}

func waitFor(t *testing.T, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(fmt.Errorf("timed out: %w", err))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
