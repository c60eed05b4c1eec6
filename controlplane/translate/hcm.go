package translate

import (
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
)

// httpFilters is the HTTP filter chain, in order: authorization first
// (nothing runs for a caller that may not call), then the PHI tagger
// (ext_proc), and the router, which must stay last.
func httpFilters(rbac, extProc *hcmv3.HttpFilter) []*hcmv3.HttpFilter {
	var out []*hcmv3.HttpFilter
	if rbac != nil {
		out = append(out, rbac)
	}
	// Position 2: tag, queue and audit only what authorization let in.
	if extProc != nil {
		out = append(out, extProc)
	}
	// Position last: the router forwards the request.
	return append(out, &hcmv3.HttpFilter{Name: wellknown.Router, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&routerv3.Router{})}})
}

// hcmOptions are what differs between medmesh's connection managers.
type hcmOptions struct {
	statPrefix string
	rdsName    string                      // RDS route name, or
	inline     *routev3.RouteConfiguration // an inline route (proxyless servers)
	// stripPort lets "emr:8080" match the virtual host "emr".
	stripPort bool
	// rbac authorizes callers (inbound only).
	rbac *hcmv3.HttpFilter
	// extProc is the PHI extension (Envoy inbound only; extproc.go).
	extProc *hcmv3.HttpFilter
	// accessLog adds the PHI-free access log (Envoy only: accesslog.go).
	accessLog bool
	// normalizePaths makes Envoy authorize and route the path the
	// application will see (Envoy only; gRPC ignores these fields).
	normalizePaths bool
	// tracing sends the sidecar's request spans to the collector (Envoy
	// only, when tracing is on: tracing.go).
	tracing *hcmv3.HttpConnectionManager_Tracing
}

func httpConnectionManager(o hcmOptions) *hcmv3.HttpConnectionManager {
	h := &hcmv3.HttpConnectionManager{
		StatPrefix:  o.statPrefix,
		CodecType:   hcmv3.HttpConnectionManager_AUTO,
		HttpFilters: httpFilters(o.rbac, o.extProc),
		// Never trust x-forwarded-for from outside: audit trails need the
		// real peer.
		UseRemoteAddress: wrapBool(true),
		// Request IDs tie a clinician's action across services in traces.
		GenerateRequestId: wrapBool(true),
		Tracing:           o.tracing,
	}
	if o.accessLog {
		h.AccessLog = accessLogs()
	}
	if o.normalizePaths {
		// Envoy matches RBAC permissions and routes on the raw path by
		// default (normalize_path and merge_slashes default to false), so
		// "/a/../b" or "//b" would be authorized as one path and served
		// by the application as another. Envoy's own advice for RBAC on
		// paths is to normalize; escaped slashes (%2F) stay as they are:
		// clinical APIs (FHIR, DICOMweb) never need them decoded.
		h.NormalizePath = wrapBool(true)
		h.MergeSlashes = true
	}
	if o.stripPort {
		h.StripPortMode = &hcmv3.HttpConnectionManager_StripAnyHostPort{StripAnyHostPort: true}
	}
	if o.inline != nil {
		h.RouteSpecifier = &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: o.inline}
	} else {
		h.RouteSpecifier = &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			ConfigSource: adsSource(), RouteConfigName: o.rdsName,
		}}
	}
	return h
}

func hcmFilter(h *hcmv3.HttpConnectionManager) *listenerv3.Filter {
	return &listenerv3.Filter{
		Name:       wellknown.HTTPConnectionManager,
		ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(h)},
	}
}
