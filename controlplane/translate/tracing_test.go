package translate_test

import (
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"

	"medmesh/api/wire"
	"medmesh/controlplane/translate"
)

// hcmsOf returns every HTTP connection manager of the resources'
// listeners (API listeners of proxyless gRPC included), by listener name.
func hcmsOf(t *testing.T, res *translate.Resources) map[string][]*hcmv3.HttpConnectionManager {
	t.Helper()
	out := map[string][]*hcmv3.HttpConnectionManager{}
	for _, r := range res.Listeners {
		l := r.(*listenerv3.Listener)
		if api := l.GetApiListener().GetApiListener(); api != nil {
			h := &hcmv3.HttpConnectionManager{}
			if err := api.UnmarshalTo(h); err != nil {
				t.Fatal(err)
			}
			out[l.GetName()] = append(out[l.GetName()], h)
		}
		for _, fc := range l.GetFilterChains() {
			for _, f := range fc.GetFilters() {
				if f.GetName() != wellknown.HTTPConnectionManager {
					continue
				}
				h := &hcmv3.HttpConnectionManager{}
				if err := f.GetTypedConfig().UnmarshalTo(h); err != nil {
					t.Fatal(err)
				}
				out[l.GetName()] = append(out[l.GetName()], h)
			}
		}
	}
	return out
}

// Every connection manager of a traced Envoy sidecar, inbound and
// outbound, exports through the collector's cluster under the sidecar's
// service name, and what it tags spans with cannot hold patient data:
// literal tags naming site, service and kind only, and no path in http.url.
func TestEnvoyTracingCarriesNoRequestContent(t *testing.T) {
	for name, want := range map[string]struct {
		service string
		tags    map[string]string
		hcms    int
	}{
		"envoy-tracing": {"emr", map[string]string{translate.TagSite: "ward-a", translate.TagService: "emr",
			translate.TagKind: "emr"}, 2},
		"envoy-tracing-outbound-only": {"kiosk", map[string]string{translate.TagService: "kiosk"}, 1},
	} {
		t.Run(name, func(t *testing.T) {
			res := translateCase(t, name)
			otlp := find[*clusterv3.Cluster](t, res.Clusters, translate.OTLPCluster)
			if len(otlp.GetTypedExtensionProtocolOptions()) == 0 {
				t.Error("the OTLP cluster does not speak HTTP/2 (OTLP is gRPC)")
			}
			n := 0
			for listener, hs := range hcmsOf(t, res) {
				for _, h := range hs {
					n++
					tr := h.GetTracing()
					if tr == nil {
						t.Fatalf("%s: connection manager without tracing", listener)
					}
					if tr.GetMaxPathTagLength() == nil || tr.GetMaxPathTagLength().GetValue() != 0 {
						t.Errorf("%s: max_path_tag_length %v: the path (patient IDs) would reach http.url", listener, tr.GetMaxPathTagLength())
					}
					if tr.GetSpawnUpstreamSpan().GetValue() {
						t.Errorf("%s: spawn_upstream_span: a sidecar and its app are one hop", listener)
					}
					got := map[string]string{}
					for _, tag := range tr.GetCustomTags() {
						lit := tag.GetLiteral()
						if lit == nil {
							t.Errorf("%s: tag %q is read from the request or environment (%T)", listener, tag.GetTag(), tag.GetType())
							continue
						}
						got[tag.GetTag()] = lit.GetValue()
					}
					if len(got) != len(want.tags) {
						t.Errorf("%s: tags %v, want %v", listener, got, want.tags)
					}
					for k, v := range want.tags {
						if got[k] != v {
							t.Errorf("%s: tag %s = %q, want %q", listener, k, got[k], v)
						}
					}
					if p := tr.GetProvider(); p.GetName() != translate.OpenTelemetryTracer {
						t.Errorf("%s: tracer %q", listener, p.GetName())
					}
					otel := &tracev3.OpenTelemetryConfig{}
					if err := tr.GetProvider().GetTypedConfig().UnmarshalTo(otel); err != nil {
						t.Fatal(err)
					}
					if otel.GetServiceName() != want.service || otel.GetGrpcService().GetEnvoyGrpc().GetClusterName() != otlp.GetName() {
						t.Errorf("%s: service %q via %q, want %q via %q", listener, otel.GetServiceName(),
							otel.GetGrpcService().GetEnvoyGrpc().GetClusterName(), want.service, otlp.GetName())
					}
				}
			}
			if n != want.hcms {
				t.Errorf("%d connection managers, want %d", n, want.hcms)
			}
		})
	}
}

// With tracing on, the outbound listener is a proxy's own (it names the
// proxy's service), not shared: Shared leaves it out, ForProxy adds it,
// and two services' sidecars get different ones.
func TestTracedOutboundListenerIsPerProxy(t *testing.T) {
	c := loadCase(t, "envoy-tracing")
	if sh := translate.Shared(c.mesh); has(sh.Envoy.Listeners, wire.OutboundHTTPListener) || !has(sh.Envoy.Clusters, translate.OTLPCluster) {
		t.Fatalf("shared Envoy resources: listeners %v clusters %v", names(sh.Envoy.Listeners), names(sh.Envoy.Clusters))
	}
	own := func(id, service string) *hcmv3.HttpConnectionManager {
		p := *c.proxy
		p.ID, p.Service, p.Instance = id, service, nil
		hs := hcmsOf(t, translate.ForProxy(c.mesh, &p, nil))[wire.OutboundHTTPListener]
		if len(hs) != 1 {
			t.Fatalf("%s: %d outbound connection managers", id, len(hs))
		}
		return hs[0]
	}
	a, b := own("emr-9", "emr"), own("pharmacy-9", "pharmacy")
	name := func(h *hcmv3.HttpConnectionManager) string {
		otel := &tracev3.OpenTelemetryConfig{}
		if err := h.GetTracing().GetProvider().GetTypedConfig().UnmarshalTo(otel); err != nil {
			t.Fatal(err)
		}
		return otel.GetServiceName()
	}
	if name(a) != "emr" || name(b) != "pharmacy" {
		t.Errorf("outbound spans named %q and %q", name(a), name(b))
	}
}

// Proxyless gRPC gets no tracing and no collector cluster: gRPC's xDS
// has no tracing configuration.
func TestProxylessGetsNoTracing(t *testing.T) {
	res := translateCase(t, "proxyless-tracing")
	if has(res.Clusters, translate.OTLPCluster) {
		t.Error("proxyless client got the OTLP cluster")
	}
	for listener, hs := range hcmsOf(t, res) {
		for _, h := range hs {
			if h.GetTracing() != nil {
				t.Errorf("%s: tracing on a proxyless connection manager", listener)
			}
		}
	}
}
