package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"

	"medmesh/api/admin"
	"medmesh/certs"
	"medmesh/controlplane"
	"medmesh/controlplane/bootstrap"
	"medmesh/controlplane/residency"
	"medmesh/examples/clinical"
)

// serveClinical runs a plain gRPC clinical server (a workload at another
// site: this site's control plane does not configure it) and returns its
// port.
func serveClinical(t *testing.T, instance string) int {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	clinical.Register(g, &clinical.Server{Instance: instance})
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	return lis.Addr().(*net.TCPAddr).Port
}

func residencyReport(t *testing.T, cp *cpHandle) admin.ResidencyResponse {
	t.Helper()
	_, body := getStatus(t, cp, "/debug/residency")
	var rr admin.ResidencyResponse
	if err := json.Unmarshal([]byte(body), &rr); err != nil {
		t.Fatalf("/debug/residency: %v: %s", err, body)
	}
	return rr
}

// Residency over real Consul peering: site-a's proxyless client reaches a
// non-PHI service that only the hub runs (routed through the peering), is
// refused a PHI service the hub exports (no endpoints: the call fails at
// site-a, and a condition names the service), until the operator's Rego
// policy allows that one flow; an edit that does not compile keeps the
// policy in force and is reported.
func TestResidencyAcrossPeeredSites(t *testing.T) {
	hub, site, ctx := peeredSites(t)
	register(t, hub.Client(), "imaging", "imaging-hub-1", serveClinical(t, "imaging-hub-1"),
		map[string]string{"medmesh-kind": "imaging", "medmesh-phi": "false", "medmesh-protocol": "grpc"}, api.HealthPassing)
	register(t, hub.Client(), "records", "records-hub-1", serveClinical(t, "records-hub-1"),
		map[string]string{"medmesh-kind": "his", "medmesh-protocol": "grpc"}, api.HealthPassing)
	if err := exportAll(ctx, hub, "site-a", "imaging", "records"); err != nil {
		t.Fatal(err)
	}
	// The caller is a service of site-a.
	register(t, site.Client(), "nurse-station", "nurse-1", freePort(t), map[string]string{"medmesh-protocol": "grpc"}, api.HealthPassing)

	policyPath := filepath.Join(t.TempDir(), "residency.rego")
	writePolicy(t, policyPath, `package medmesh.residency

deny contains msg if {
	input.action == "data_transfer"
	input.source.site != input.destination.site
	msg := sprintf("%s is PHI: it stays at site %s", [input.destination.service, input.destination.site])
}
`)
	cp := startControlPlane(t, siteSource(site), func(o *controlplane.Options) {
		o.Site = "site-a"
		o.ResidencyPolicy = &residency.File{Path: policyPath, Interval: 50 * time.Millisecond}
	})

	imaging := dialXDSWith(t, nodeOf(cp, "nurse-1", "nurse-station"), "imaging", false)
	eventually(t, "site-a reaches the hub's imaging (non-PHI) through the peering", func() error {
		got, err := servedBy(ctx, imaging, 1)
		if err != nil {
			return err
		}
		if got["imaging-hub-1"] != 1 {
			return fmt.Errorf("served by %v", got)
		}
		return nil
	})
	eventually(t, "records (PHI, only at the hub) held back with a condition", func() error {
		rr := residencyReport(t, cp)
		if len(rr.Conditions) != 1 || rr.Conditions[0].Service != "records" || rr.Site != "site-a" {
			return fmt.Errorf("residency %+v", rr)
		}
		return nil
	})
	records := dialXDSWith(t, nodeOf(cp, "nurse-1b", "nurse-station"), "records", false)
	cctx, ccancel := context.WithTimeout(ctx, 2*time.Second)
	_, err := clinical.Fetch(cctx, records, "Patient")
	ccancel()
	if err == nil {
		t.Fatal("a PHI service at the hub was reached from site-a")
	}

	// A broken edit keeps the policy in force, and says why.
	writePolicy(t, policyPath, "package medmesh.residency\n\ndeny if {\n")
	eventually(t, "the broken edit reported", func() error {
		if rr := residencyReport(t, cp); !strings.Contains(rr.Policy.LastError, "residency.rego:") {
			return fmt.Errorf("policy %+v", rr.Policy)
		}
		return nil
	})
	if got, err := servedBy(ctx, imaging, 1); err != nil || got["imaging-hub-1"] != 1 {
		t.Fatalf("after a broken policy edit: %v %v", got, err)
	}

	// The operator allows one flow: the nurse station may read records at
	// the hub. It applies without a restart.
	writePolicy(t, policyPath, `package medmesh.residency

deny contains msg if {
	input.action == "data_transfer"
	input.source.site != input.destination.site
	not allowed_flow
	msg := sprintf("%s is PHI: it stays at site %s", [input.destination.service, input.destination.site])
}

allowed_flow if {
	input.source.service == "nurse-station"
	input.destination.service == "records"
	input.destination.site == "hub"
}
`)
	eventually(t, "records at the hub reached once the policy allows that flow", func() error {
		got, err := servedBy(ctx, records, 1)
		if err != nil {
			return err
		}
		if got["records-hub-1"] != 1 {
			return fmt.Errorf("served by %v", got)
		}
		return nil
	})
}

func writePolicy(t *testing.T, path, src string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
}

// svidDirFor writes an SVID for an exact SPIFFE ID (a workload of another
// site, signed under the same hospital root).
func svidDirFor(t *testing.T, ca *certs.CA, id string) string {
	t.Helper()
	sid, err := spiffeid.FromString(id)
	if err != nil {
		t.Fatal(err)
	}
	svid, err := ca.NewSVID(sid)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "svid")
	if err := certs.WriteSVIDDir(dir, svid, ca.Bundle()); err != nil {
		t.Fatal(err)
	}
	return dir
}

// Residency's second line, at the callee: the hub's PHI records service
// admits the nurse station of its own site (an intention allows it), and
// refuses the same service calling from site-a with a valid certificate
// (a hand-configured caller the mesh never routed), until the hub's
// residency policy allows that flow.
func TestCalleeRefusesOtherSiteCallers(t *testing.T) {
	dir := t.TempDir()
	hubCA, err := certs.New(certs.Options{TrustDomain: "medmesh.local", StateDir: dir, Site: "hub"})
	if err != nil {
		t.Fatal(err)
	}
	// The same hospital root, unbound to a site: it signs site-a's caller.
	anyCA, err := certs.New(certs.Options{TrustDomain: "medmesh.local", StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	hub, _, ctx := peeredSites(t)
	policyPath := filepath.Join(t.TempDir(), "residency.rego")
	writePolicy(t, policyPath, "package medmesh.residency\n\ndeny if {\n\tinput.action == \"data_transfer\"\n\tinput.source.site != input.destination.site\n}\n")
	cp := startControlPlane(t, siteSource(hub), func(o *controlplane.Options) {
		o.Identities, o.Site = hubCA, "hub"
		o.ResidencyPolicy = &residency.File{Path: policyPath, Interval: 50 * time.Millisecond}
	})
	port := freePort(t)
	serveXDS(t, bootstrap.Options{XDSAddress: cp.xdsAddr(), NodeID: "records-1", Service: "records", SVIDDir: svidDir(t, hubCA, "records")},
		port, true, &clinical.Server{Instance: "records-1"})
	register(t, hub.Client(), "records", "records-1", port, map[string]string{"medmesh-kind": "his", "medmesh-protocol": "grpc"}, api.HealthPassing)
	register(t, hub.Client(), "nurse-station", "nurse-hub-1", freePort(t), map[string]string{"medmesh-protocol": "grpc"}, api.HealthPassing)
	setIntention(t, hub.Client(), "records", "nurse-station", api.IntentionActionAllow)

	local := dialXDSWith(t, bootstrap.Options{XDSAddress: cp.xdsAddr(), NodeID: "nurse-hub-1", Service: "nurse-station",
		SVIDDir: svidDir(t, hubCA, "nurse-station")}, "records", true)
	eventually(t, "the hub's own nurse station reads records", func() error { _, err := servedBy(ctx, local, 1); return err })

	remoteID := "spiffe://medmesh.local/ns/default/svc/nurse-station/site/site-a"
	remote := dialXDSWith(t, bootstrap.Options{XDSAddress: cp.xdsAddr(), NodeID: "nurse-a-1", Service: "nurse-station",
		SVIDDir: svidDirFor(t, anyCA, remoteID)}, "records", true)
	waitDenied(t, "site-a's nurse station refused by the hub's records", remote)

	writePolicy(t, policyPath, `package medmesh.residency

deny if {
	input.action == "data_transfer"
	input.source.site != input.destination.site
	not nurse_from_site_a
}

nurse_from_site_a if {
	input.source.service == "nurse-station"
	input.source.site == "site-a"
}
`)
	eventually(t, "site-a's nurse station admitted once the policy allows it", func() error {
		_, err := servedBy(ctx, remote, 1)
		return err
	})
}
