package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/hashicorp/consul/api"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"medmesh/api/admin"
	"medmesh/api/wire"
	"medmesh/certs"
	"medmesh/controlplane"
	"medmesh/controlplane/bootstrap"
	"medmesh/controlplane/translate"
	"medmesh/internal/simproxy"
)

// TestScopeFollowsIntentions: with real Consul intentions, a connected
// sidecar (SotW and delta) is sent a PHI service only while an intention
// lets its service call it, gaining and losing it on the same stream; the
// rest of the time a call for it is answered by the sidecar's own
// catch-all (403, naming why). A proxyless client of the same service
// fails at once with PERMISSION_DENIED while the server's RBAC would
// refuse it, and reaches the server once the intention allows it: the
// client's scope and the server's RBAC agree.
func TestScopeFollowsIntentions(t *testing.T) {
	ca, err := certs.New(certs.Options{TrustDomain: "medmesh.local", StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	consul := startConsul(t, true)
	c := consul.Client()
	emrMeta := map[string]string{"medmesh-kind": "emr", "medmesh-protocol": "grpc"}
	register(t, c, "labs", "labs-1", 9301, nil, api.HealthPassing)
	register(t, c, "nurse", "nurse-1", 9302, nil, api.HealthPassing)
	register(t, c, "nurse", "nurse-2", 9303, nil, api.HealthPassing)
	cp := startControlPlane(t, consulSource(consul), func(o *controlplane.Options) { o.Identities, o.Dev = ca, true })

	// The EMR server (PHI: default deny), proxyless, mTLS.
	callers := &callerRecorder{}
	port := freePort(t)
	serveXDS(t, bootstrap.Options{XDSAddress: cp.xdsAddr(), NodeID: "emr-1", Service: "emr", SVIDDir: svidDir(t, ca, "emr")}, port, true,
		callers.server("emr-1"))
	register(t, c, "emr", "emr-1", port, emrMeta, api.HealthPassing)

	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	proxies := map[string]*simproxy.Proxy{}
	for id, delta := range map[string]bool{"nurse-1": false, "nurse-2": true} {
		proxies[id] = startSimProxy(t, cp.xdsAddr(), simproxy.Options{NodeID: id, Cluster: "nurse", Delta: delta, Validate: validateAll})
	}
	waitAll := func(what string, cond func(simproxy.State) error) {
		t.Helper()
		for id, p := range proxies {
			var last error
			if err := p.Wait(ctx, func(s simproxy.State) bool { last = cond(s); return last == nil }); err != nil {
				t.Fatalf("%s: %s: %v (last: %v)", id, what, err, last)
			}
		}
	}
	holdsEMR := func(want bool) func(simproxy.State) error {
		return func(s simproxy.State) error {
			_, cluster := s.Resources[resource.ClusterType]["emr"]
			_, eds := s.Resources[resource.EndpointType]["emr"]
			vhosts := outboundVirtualHosts(s)
			if cluster != want || eds != want || vhosts["emr"] != want {
				return fmt.Errorf("emr cluster %t, endpoints %t, virtual host %t; want %t", cluster, eds, vhosts["emr"], want)
			}
			if !vhosts["labs"] || !vhosts[translate.OutOfScopeVirtualHost] {
				return fmt.Errorf("virtual hosts %v: want labs (default allow) and the catch-all", vhosts)
			}
			return nil
		}
	}

	// No intention: labs (not PHI) is sent, emr is not.
	waitAll("emr out of scope", holdsEMR(false))
	rc := proxies["nurse-1"].State().Resources[resource.RouteType][wire.OutboundHTTPRoute].(*routev3.RouteConfiguration)
	for _, vh := range rc.GetVirtualHosts() {
		if vh.GetName() != translate.OutOfScopeVirtualHost {
			continue
		}
		dr := vh.GetRoutes()[0].GetDirectResponse()
		if dr.GetStatus() != translate.OutOfScopeStatus || !strings.Contains(dr.GetBody().GetInlineString(), "may not call this host") {
			t.Errorf("catch-all answers %d %q", dr.GetStatus(), dr.GetBody().GetInlineString())
		}
	}
	cc := dialXDSWith(t, bootstrap.Options{XDSAddress: cp.xdsAddr(), NodeID: "nurse-app", Service: "nurse", SVIDDir: svidDir(t, ca, "nurse")}, "emr", true)
	eventually(t, "the proxyless client is refused in its own channel", func() error {
		_, err := servedBy(ctx, cc, 1)
		if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "fault injection") {
			return fmt.Errorf("got %v, want PermissionDenied from the client's out-of-scope route", err)
		}
		return nil
	})

	// An intention lets nurse call emr: both sidecars gain it on the
	// streams they have, and the proxyless client reaches the server.
	setIntention(t, c, "emr", "nurse", api.IntentionActionAllow)
	waitAll("emr in scope", holdsEMR(true))
	eventually(t, "the proxyless client reaches emr", func() error { _, err := servedBy(ctx, cc, 1); return err })
	if got, want := callers.last(), "spiffe://medmesh.local/ns/default/svc/nurse"; got != want {
		t.Errorf("emr saw caller %q, want %q", got, want)
	}
	sc := debugScope(t, cp, "nurse-1")
	if !hasEntry(sc.Included, "emr", "an intention allows it") || !hasEntry(sc.Included, "labs", "default-allow") {
		t.Errorf("/debug/config scope of nurse-1: %+v", sc)
	}

	// A deny intention takes it away again, on the same streams.
	setIntention(t, c, "emr", "nurse", api.IntentionActionDeny)
	waitAll("emr out of scope again", holdsEMR(false))
	waitDenied(t, "the proxyless client is refused again", cc)
	sc = debugScope(t, cp, "nurse-2")
	if !hasEntry(sc.Excluded, "emr", "denies") {
		t.Errorf("/debug/config scope of nurse-2 does not say why emr is out: %+v", sc)
	}
	for id, p := range proxies {
		if err := p.Err(); err != nil {
			t.Errorf("%s: stream ended (scope changes must not need a reconnect): %v", id, err)
		}
	}
}

// outboundVirtualHosts names the virtual hosts of a sidecar's outbound
// route.
func outboundVirtualHosts(s simproxy.State) map[string]bool {
	out := map[string]bool{}
	rc, _ := s.Resources[resource.RouteType][wire.OutboundHTTPRoute].(*routev3.RouteConfiguration)
	for _, vh := range rc.GetVirtualHosts() {
		out[vh.GetName()] = true
	}
	return out
}

func debugScope(t *testing.T, cp *cpHandle, node string) *admin.ScopeResponse {
	t.Helper()
	var cfg admin.ConfigResponse
	eventually(t, "/debug/config of "+node, func() error {
		resp, err := http.Get(cp.adminURL() + "/debug/config?node=" + node)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return errors.New(resp.Status)
		}
		return json.NewDecoder(resp.Body).Decode(&cfg)
	})
	if cfg.Scope == nil {
		t.Fatalf("/debug/config?node=%s has no scope", node)
	}
	return cfg.Scope
}

func hasEntry(es []admin.ScopeEntry, svc, reason string) bool {
	for _, e := range es {
		if e.Service == svc && strings.Contains(e.Reason, reason) {
			return true
		}
	}
	return false
}
