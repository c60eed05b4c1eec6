package integration

import (
	"context"
	"strings"
	"testing"

	"github.com/hashicorp/consul/api"

	"medmesh/certs"
	"medmesh/controlplane"
	"medmesh/controlplane/bootstrap"
	"medmesh/examples/clinical"
)

// At an edge site (--site) the CA puts the site in every SPIFFE ID, and
// the mesh names services by that form everywhere it checks one: the
// callee's RBAC admits the caller an intention allows and the caller's
// cluster accepts the callee's certificate, so a call inside the site
// works over mTLS exactly as at a single site.
func TestProxylessMTLSAtSite(t *testing.T) {
	ca, err := certs.New(certs.Options{TrustDomain: "medmesh.local", StateDir: t.TempDir(), Site: "site-a"})
	if err != nil {
		t.Fatal(err)
	}
	consul := startConsul(t, true)
	cp := startControlPlane(t, consulSource(consul), func(o *controlplane.Options) { o.Identities, o.Site = ca, "site-a" })

	callers := &callerRecorder{}
	port := freePort(t)
	serveXDS(t, bootstrap.Options{XDSAddress: cp.xdsAddr(), NodeID: "emr-1", Service: "emr", SVIDDir: svidDir(t, ca, "emr")}, port, true,
		callers.server("emr-1"))
	register(t, consul.Client(), "emr", "emr-1", port, map[string]string{"medmesh-kind": "emr", "medmesh-protocol": "grpc"}, api.HealthPassing)
	cc := dialXDSWith(t, bootstrap.Options{XDSAddress: cp.xdsAddr(), NodeID: "his-1", Service: "his", SVIDDir: svidDir(t, ca, "his")}, "emr", true)

	waitDenied(t, "his refused by default", cc)
	setIntention(t, consul.Client(), "emr", "his", api.IntentionActionAllow)
	eventually(t, "an mTLS call inside the site succeeds", func() error { _, err := servedBy(context.Background(), cc, 1); return err })
	if got := callers.last(); got != "spiffe://medmesh.local/ns/default/svc/his/site/site-a" {
		t.Fatalf("server saw caller %q", got)
	}

	// A non-PHI service admits any caller of the site: its RBAC matches
	// the site's IDs with a pattern, which grpc-go accepts and applies.
	schedPort := freePort(t)
	serveXDS(t, bootstrap.Options{XDSAddress: cp.xdsAddr(), NodeID: "scheduling-1", Service: "scheduling",
		SVIDDir: svidDir(t, ca, "scheduling")}, schedPort, true, &clinical.Server{Instance: "scheduling-1"})
	register(t, consul.Client(), "scheduling", "scheduling-1", schedPort, map[string]string{"medmesh-protocol": "grpc"}, api.HealthPassing)
	sched := dialXDSWith(t, bootstrap.Options{XDSAddress: cp.xdsAddr(), NodeID: "his-2", Service: "his", SVIDDir: svidDir(t, ca, "his")},
		"scheduling", true)
	eventually(t, "a call to a non-PHI service inside the site succeeds", func() error {
		_, err := servedBy(context.Background(), sched, 1)
		return err
	})
	_, cfg := getStatus(t, cp, "/debug/config?node=scheduling-1")
	if !strings.Contains(cfg, `/site/site-a$`) {
		t.Fatalf("scheduling's RBAC does not name the site's workloads by pattern:\n%.2000s", cfg)
	}
}
