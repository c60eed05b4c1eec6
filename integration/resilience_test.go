package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/hashicorp/consul/api"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"medmesh/api/admin"
	"medmesh/controlplane"
	"medmesh/internal/consulagent"
	"medmesh/internal/simproxy"
)

func getStatus(t *testing.T, cp *cpHandle, path string) (int, string) {
	t.Helper()
	resp, err := http.Get(cp.adminURL() + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func proxies(t *testing.T, cp *cpHandle) admin.ProxiesResponse {
	t.Helper()
	code, body := getStatus(t, cp, "/debug/proxies")
	if code != 200 {
		t.Fatalf("/debug/proxies: %d %s", code, body)
	}
	var pr admin.ProxiesResponse
	if err := json.Unmarshal([]byte(body), &pr); err != nil {
		t.Fatal(err)
	}
	return pr
}

// TestConsulUnreachableAtStart: a clear error, retries with backoff,
// /readyz false and nothing pushed; once Consul appears, config flows.
func TestConsulUnreachableAtStart(t *testing.T) {
	agent, err := consulagent.New(t.TempDir(), true) // prepared, not started
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { agent.Stop() })
	cp := startControlPlane(t, consulSource(agent))
	rec := &recorder{}
	p := startSimProxy(t, cp.xdsAddr(), simproxy.Options{NodeID: "emr-1", Cluster: "emr", Validate: validateAll},
		grpc.WithStreamInterceptor(rec.interceptor()))

	// Retries are visible: the error names the unreachable address and
	// repeats (backoff, not a single try).
	eventually(t, "repeated connection errors", func() error {
		if n := strings.Count(cp.logs.String(), `Consul query failed; keeping the last known catalog" source=consul query="listing services"`); n < 3 {
			return fmt.Errorf("%d errors logged", n)
		}
		return nil
	})
	if !strings.Contains(cp.logs.String(), agent.Addr()) {
		t.Errorf("errors do not name the Consul address %s", agent.Addr())
	}
	if code, body := getStatus(t, cp, "/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "no catalog") {
		t.Fatalf("/readyz = %d %q, want 503 explaining why", code, body)
	}
	if st := p.State(); len(st.Resources) != 0 {
		t.Fatalf("proxy received config before any catalog: %v", st.Resources)
	}

	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := agent.Start(ctx); err != nil {
		t.Fatal(err)
	}
	register(t, agent.Client(), "emr", "emr-1", 9101, nil, api.HealthPassing)
	if err := p.Wait(ctx, fullConfig("emr")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "/readyz 200", func() error {
		if code, body := getStatus(t, cp, "/readyz"); code != 200 {
			return fmt.Errorf("%d %s", code, body)
		}
		return nil
	})
}

// TestNACKKeepsLastGoodAndIsVisible: a proxy that rejects an update keeps
// its last ACKed config, and the NACK reason shows in /debug/proxies.
func TestNACKKeepsLastGoodAndIsVisible(t *testing.T) {
	consul := startConsul(t, true)
	c := consul.Client()
	register(t, c, "emr", "emr-1", 9101, nil, api.HealthPassing)
	cp := startControlPlane(t, consulSource(consul))

	// This proxy cannot handle maglev (an older Envoy, say) and NACKs it.
	rejectMaglev := func(typ string, m proto.Message) error {
		if c, ok := m.(*clusterv3.Cluster); ok && c.GetLbPolicy() == clusterv3.Cluster_MAGLEV {
			return errors.New("cluster " + c.GetName() + ": maglev is not supported by this proxy")
		}
		return validateAll(typ, m)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	ids := []string{"client-sotw", "client-delta"}
	var ps []*simproxy.Proxy
	for i, id := range ids {
		p := startSimProxy(t, cp.xdsAddr(), simproxy.Options{NodeID: id, Cluster: "his", Delta: i == 1, Validate: rejectMaglev})
		if err := p.Wait(ctx, fullConfig("emr")); err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
	}
	register(t, c, "imaging", "imaging-1", 9301, map[string]string{"medmesh-lb": "maglev"}, api.HealthPassing)
	for i, p := range ps {
		if err := p.Wait(ctx, func(s simproxy.State) bool { return s.NACKs[resource.ClusterType] != "" }); err != nil {
			t.Fatal(err)
		}
		st := p.State()
		if _, ok := st.Resources[resource.ClusterType]["emr"]; !ok {
			t.Fatalf("%s lost its last good clusters after a NACK", ids[i])
		}
		if _, ok := st.Resources[resource.ClusterType]["imaging"]; ok {
			t.Fatalf("%s applied a config it rejected", ids[i])
		}
	}
	eventually(t, "NACKs visible in /debug/proxies", func() error {
		seen := 0
		for _, px := range proxies(t, cp).Proxies {
			if px.LastNACK != nil && strings.Contains(px.LastNACK.Message, "maglev is not supported") &&
				px.Types["CDS"].Acked != px.Types["CDS"].Sent {
				seen++
			}
		}
		if seen != 2 {
			_, body := getStatus(t, cp, "/debug/proxies")
			return fmt.Errorf("%d of 2 proxies show the NACK: %s", seen, body)
		}
		return nil
	})
	// The NACKs stand in /metrics (what the NACK-standing alert reads)
	// until the proxies ACK clusters again: without maglev, they do.
	eventually(t, "two CDS NACKs standing in /metrics", wantMetric(t, cp, `medmesh_xds_proxies_nacking{type="CDS"}`, 2))
	if _, ok := metric(t, cp, `medmesh_xds_standing_nack_oldest_timestamp_seconds{type="CDS"}`); !ok {
		t.Error("no oldest standing CDS NACK in /metrics")
	}
	if err := c.Agent().ServiceDeregister("imaging-1"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the NACKs resolved in /metrics", wantMetric(t, cp, `medmesh_xds_proxies_nacking{type="CDS"}`, 0))
	if _, ok := metric(t, cp, `medmesh_xds_standing_nack_oldest_timestamp_seconds{type="CDS"}`); ok {
		t.Error("an oldest standing CDS NACK after every proxy ACKed")
	}
}

// TestRestartsNeverPushEmptyConfig: restarting the control plane (with
// Consul down) serves the last good catalog from the state dir; restarting
// Consul never pushes an empty or partial config; changes still flow after.
func TestRestartsNeverPushEmptyConfig(t *testing.T) {
	consul := startConsul(t, false) // a server with a data dir, like production
	c := consul.Client()
	hospital(t, c)
	state := t.TempDir()
	withState := func(o *controlplane.Options) { o.StateDir = state }
	ctx, cancel := context.WithTimeout(context.Background(), 2*testTimeout)
	defer cancel()

	cp := startControlPlane(t, consulSource(consul), withState)
	rec := &recorder{}
	p := startSimProxy(t, cp.xdsAddr(), simproxy.Options{NodeID: "emr-1", Cluster: "emr", Validate: validateAll},
		grpc.WithStreamInterceptor(rec.interceptor()))
	if err := p.Wait(ctx, fullConfig("emr", "his", "imaging")); err != nil {
		t.Fatal(err)
	}
	full := p.State()
	rec.setMin(resource.ClusterType, len(full.Resources[resource.ClusterType]))
	rec.setMin(resource.ListenerType, len(full.Resources[resource.ListenerType]))

	// 1. Consul restarts under a running control plane.
	if err := consul.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	setHealth(t, c, "imaging-2", api.HealthPassing)
	if err := p.Wait(ctx, func(s simproxy.State) bool { return endpointCount(s, "imaging") == 2 }); err != nil {
		_, cat := getStatus(t, cp, "/debug/catalog")
		e, _, herr := c.Health().Service("imaging", "", false, nil)
		for _, x := range e {
			t.Logf("consul: %s %s", x.Service.ID, x.Checks.AggregatedStatus())
		}
		t.Fatalf("change after Consul restart not delivered: %v (proxy has %d imaging endpoints; consul err %v)\ncatalog: %s", err, endpointCount(p.State(), "imaging"), herr, cat)
	}

	// 2. The control plane restarts while Consul is down: it serves the
	// saved catalog, and the proxy (reconnecting) gets the full mesh.
	cp.stop(t)
	if err := consul.Stop(); err != nil {
		t.Fatal(err)
	}
	cp2 := startControlPlane(t, consulSource(consul), withState)
	p2 := startSimProxy(t, cp2.xdsAddr(), simproxy.Options{NodeID: "emr-1", Cluster: "emr", Validate: validateAll},
		grpc.WithStreamInterceptor(rec.interceptor()))
	if err := p2.Wait(ctx, fullConfig("emr", "his", "imaging")); err != nil {
		t.Fatal(err)
	}
	if code, _ := getStatus(t, cp2, "/readyz"); code != 200 {
		t.Errorf("/readyz = %d while serving the saved catalog", code)
	}
	if pr := proxies(t, cp2); pr.Serving != "disk" {
		t.Errorf("status says serving from %q, want disk", pr.Serving)
	}
	// 3. Consul returns: the same mesh, and changes flow again.
	if err := consul.Start(ctx); err != nil {
		t.Fatal(err)
	}
	setHealth(t, c, "imaging-2", api.HealthCritical)
	if err := p2.Wait(ctx, func(s simproxy.State) bool { return endpointCount(s, "imaging") == 1 }); err != nil {
		t.Fatal(err)
	}
	if v := rec.violations(); len(v) > 0 {
		t.Fatalf("empty or partial config pushed:\n%s", strings.Join(v, "\n"))
	}
}
