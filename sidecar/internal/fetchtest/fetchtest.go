// Package fetchtest is a one-method gRPC service for the tests of the
// sidecar packages that intercept gRPC calls (middleware, phi), so that
// library tests need no example service. It needs no generated code: the
// request and reply are well-known protobuf types, and the service
// descriptor is written out by hand.
//
// Its method, like any a classifier has no rule for, is classified as
// unknown traffic: medium priority, not PHI.
package fetchtest

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// ServiceName is the gRPC service name.
const ServiceName = "medmesh.test.Fetcher"

// FetchMethod is the full method name of Fetch.
const FetchMethod = "/" + ServiceName + "/Fetch"

// Server answers Fetch with its Instance.
type Server struct {
	Instance string
	// Handle, when set, runs for every call with the requested kind
	// (to hold a call, fail it, or see its metadata).
	Handle func(ctx context.Context, kind string) error
}

// Fetch returns the instance's name.
func (s *Server) Fetch(ctx context.Context, req *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
	if s.Handle != nil {
		if err := s.Handle(ctx, req.GetValue()); err != nil {
			return nil, err
		}
	}
	return wrapperspb.String(s.Instance), nil
}

// Register adds the service to a gRPC server.
func Register(r grpc.ServiceRegistrar, s *Server) {
	r.RegisterService(&serviceDesc, s)
}

// Fetch calls Fetch on a connection and returns the serving instance.
func Fetch(ctx context.Context, cc grpc.ClientConnInterface, kind string, opts ...grpc.CallOption) (string, error) {
	out := new(wrapperspb.StringValue)
	if err := cc.Invoke(ctx, FetchMethod, wrapperspb.String(kind), out, opts...); err != nil {
		return "", err
	}
	return out.GetValue(), nil
}

type fetcher interface {
	Fetch(context.Context, *wrapperspb.StringValue) (*wrapperspb.StringValue, error)
}

var serviceDesc = grpc.ServiceDesc{
	ServiceName: ServiceName,
	HandlerType: (*fetcher)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Fetch",
		Handler: func(srv any, ctx context.Context, dec func(any) error, ic grpc.UnaryServerInterceptor) (any, error) {
			in := new(wrapperspb.StringValue)
			if err := dec(in); err != nil {
				return nil, err
			}
			if ic == nil {
				return srv.(fetcher).Fetch(ctx, in)
			}
			info := &grpc.UnaryServerInfo{Server: srv, FullMethod: FetchMethod}
			return ic(ctx, in, info, func(ctx context.Context, req any) (any, error) {
				return srv.(fetcher).Fetch(ctx, req.(*wrapperspb.StringValue))
			})
		},
	}},
	Metadata: "medmesh/sidecar/internal/fetchtest",
}
