package translate_test

import (
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"

	"medmesh/api/wire"
	"medmesh/controlplane/translate"
)

// inboundChains returns the HTTP connection managers of the inbound
// listener's filter chains.
func inboundHCMs(t *testing.T, res *translate.Resources) []*hcmv3.HttpConnectionManager {
	t.Helper()
	l := find[*listenerv3.Listener](t, res.Listeners, wire.InboundListener)
	var out []*hcmv3.HttpConnectionManager
	for _, fc := range l.GetFilterChains() {
		for _, f := range fc.GetFilters() {
			if f.GetName() != wellknown.HTTPConnectionManager {
				continue
			}
			h := &hcmv3.HttpConnectionManager{}
			if err := f.GetTypedConfig().UnmarshalTo(h); err != nil {
				t.Fatal(err)
			}
			out = append(out, h)
		}
	}
	return out
}

func extProcOf(t *testing.T, h *hcmv3.HttpConnectionManager) (*extprocv3.ExternalProcessor, []string) {
	t.Helper()
	var order []string
	var ep *extprocv3.ExternalProcessor
	for _, f := range h.GetHttpFilters() {
		order = append(order, f.GetName())
		if f.GetName() == translate.ExtProcFilterName {
			ep = &extprocv3.ExternalProcessor{}
			if err := f.GetTypedConfig().UnmarshalTo(ep); err != nil {
				t.Fatal(err)
			}
		}
	}
	return ep, order
}

func TestExtProcOnPHIServiceFailsClosed(t *testing.T) {
	res := translateCase(t, "envoy-mtls") // emr: PHI, with RBAC
	hcms := inboundHCMs(t, res)
	if len(hcms) != 1 {
		t.Fatalf("%d inbound HCMs", len(hcms))
	}
	ep, order := extProcOf(t, hcms[0])
	if ep == nil {
		t.Fatalf("no ext_proc filter on a PHI service's inbound HCM: %v", order)
	}
	want := []string{wellknown.HTTPRoleBasedAccessControl, translate.ExtProcFilterName, wellknown.Router}
	if len(order) != 3 || order[0] != want[0] || order[1] != want[1] || order[2] != want[2] {
		t.Errorf("filter order %v, want %v (authorize, then tag, then route)", order, want)
	}
	if ep.GetFailureModeAllow() {
		t.Error("PHI service fails open: an untagged, unaudited PHI request could reach the service")
	}
	if ep.GetStatusOnError().GetCode() != 503 {
		t.Errorf("status on error %v, want 503", ep.GetStatusOnError())
	}
	if got, longest := ep.GetMessageTimeout().AsDuration(), wire.SchedulerLongestWait; got <= longest {
		t.Errorf("message_timeout %v must exceed the longest queue wait %v", got, longest)
	}
	if ep.GetGrpcService().GetEnvoyGrpc().GetClusterName() != translate.ExtProcCluster {
		t.Errorf("ext_proc cluster %q", ep.GetGrpcService().GetEnvoyGrpc().GetClusterName())
	}
	pm := ep.GetProcessingMode()
	if pm.GetRequestHeaderMode() != extprocv3.ProcessingMode_SEND || pm.GetResponseHeaderMode() != extprocv3.ProcessingMode_SEND ||
		pm.GetRequestBodyMode() != extprocv3.ProcessingMode_NONE || pm.GetResponseBodyMode() != extprocv3.ProcessingMode_NONE {
		t.Errorf("processing mode %v: want headers both ways, no bodies", pm)
	}
	for _, ns := range [][]string{ep.GetMetadataOptions().GetForwardingNamespaces().GetUntyped(), ep.GetMetadataOptions().GetReceivingNamespaces().GetUntyped()} {
		if len(ns) != 1 || ns[0] != "medmesh" {
			t.Errorf("metadata namespaces %v, want [medmesh]", ns)
		}
	}
	attrs := map[string]bool{}
	for _, a := range ep.GetRequestAttributes() {
		attrs[a] = true
	}
	if !attrs["connection.uri_san_peer_certificate"] {
		t.Error("the caller's SPIFFE ID is not sent: priority caps and audit need it")
	}

	c := find[*clusterv3.Cluster](t, res.Clusters, translate.ExtProcCluster)
	th := c.GetCircuitBreakers().GetThresholds()[0]
	outstanding := uint32(wire.SchedulerMaxOutstanding)
	if th.GetMaxRequests().GetValue() <= outstanding || th.GetMaxPendingRequests().GetValue() <= outstanding {
		t.Errorf("ext_proc circuit breaker %v must exceed what the scheduler holds (%d)", th, outstanding)
	}
	sa := c.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
	if sa.GetAddress() != "127.0.0.1" || sa.GetPortValue() != wire.ExtProcPort {
		t.Errorf("ext_proc at %s:%d", sa.GetAddress(), sa.GetPortValue())
	}
	if len(c.GetTypedExtensionProtocolOptions()) == 0 {
		t.Error("ext_proc cluster is not HTTP/2 (gRPC needs it)")
	}
}

func TestExtProcOnOtherServicesFailsOpen(t *testing.T) {
	res := translateCase(t, "envoy-permissive") // scheduling: generic, not PHI; two chains
	hcms := inboundHCMs(t, res)
	if len(hcms) != 2 {
		t.Fatalf("%d inbound HCMs, want the mTLS and the plaintext chain", len(hcms))
	}
	for i, h := range hcms {
		ep, order := extProcOf(t, h)
		if ep == nil {
			t.Fatalf("chain %d: no ext_proc filter: %v", i, order)
		}
		if !ep.GetFailureModeAllow() {
			t.Errorf("chain %d: a non-PHI service fails closed", i)
		}
		if order[len(order)-1] != wellknown.Router {
			t.Errorf("chain %d: router not last: %v", i, order)
		}
	}
}

func TestNoExtProcWithoutHTTPInbound(t *testing.T) {
	if res := translateCase(t, "envoy-tcp"); has(res.Clusters, translate.ExtProcCluster) {
		t.Error("TCP service got an ext_proc cluster")
	}
	if res := translateCase(t, "envoy-outbound-only"); has(res.Clusters, translate.ExtProcCluster) {
		t.Error("outbound-only proxy got an ext_proc cluster")
	}
	res := translateCase(t, "proxyless-server")
	if has(res.Clusters, translate.ExtProcCluster) {
		t.Error("proxyless server got an ext_proc cluster (it uses the middleware)")
	}
}
