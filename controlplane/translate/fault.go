package translate

import (
	faultcommonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/fault/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"

	"medmesh/controlplane/ir"
)

// Fault injection (MeshRoute fault, for drills): the fault filter sits in
// the caller's HTTP filter chain with an empty configuration, which
// injects nothing, and each faulty route overrides it with its own
// (typed_per_filter_config). Envoy and grpc-go both work this way. The
// filter is added only where some route needs it, so a mesh without
// drills gets exactly the chains it had.

const faultFilterName = wellknown.Fault

// withFaultFilter inserts the fault filter just before the router (the
// last filter), leaving the rest of the chain as hcm.go ordered it.
func withFaultFilter(h *hcmv3.HttpConnectionManager) *hcmv3.HttpConnectionManager {
	f := &hcmv3.HttpFilter{Name: faultFilterName, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&faultv3.HTTPFault{})}}
	n := len(h.HttpFilters)
	chain := make([]*hcmv3.HttpFilter, 0, n+1)
	chain = append(chain, h.HttpFilters[:n-1]...)
	h.HttpFilters = append(append(chain, f), h.HttpFilters[n-1])
	return h
}

// anyFault reports whether any HTTP service's routes inject faults.
func anyFault(m *ir.Mesh) bool {
	for i := range m.Services {
		if m.Services[i].Policy.HasFault && m.Services[i].Protocol.IsHTTP() {
			return true
		}
	}
	return false
}

func httpFault(f *ir.Fault) *faultv3.HTTPFault {
	out := &faultv3.HTTPFault{}
	if f.Delay > 0 {
		out.Delay = &faultcommonv3.FaultDelay{
			FaultDelaySecifier: &faultcommonv3.FaultDelay_FixedDelay{FixedDelay: dur(f.Delay)},
			Percentage:         percent(f.DelayPercent),
		}
	}
	switch {
	case f.GRPCStatus != nil:
		out.Abort = &faultv3.FaultAbort{ErrorType: &faultv3.FaultAbort_GrpcStatus{GrpcStatus: *f.GRPCStatus}, Percentage: percent(f.AbortPercent)}
	case f.HTTPStatus != 0:
		out.Abort = &faultv3.FaultAbort{ErrorType: &faultv3.FaultAbort_HttpStatus{HttpStatus: f.HTTPStatus}, Percentage: percent(f.AbortPercent)}
	}
	return out
}
