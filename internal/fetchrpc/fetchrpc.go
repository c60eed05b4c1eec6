// Package fetchrpc is a one-method gRPC service written out by hand: the
// request and reply are well-known protobuf types and the service
// descriptor is built here, so neither the example services nor the tests
// that need a real gRPC call carry generated code. examples/clinical
// serves it as medmesh.examples.Clinical; the sidecar's library tests
// serve it under a name of their own.
package fetchrpc

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Server answers Fetch with the instance that served it.
type Server struct {
	// Instance is reported back to callers, so tests can see which
	// instance the mesh routed to.
	Instance string
	// Handle, when set, runs for every call with the requested kind (to
	// hold a call, fail it on demand, or see its metadata).
	Handle func(ctx context.Context, kind string) error
}

// Fetch returns the serving instance's name for a record kind.
func (s *Server) Fetch(ctx context.Context, req *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
	if s.Handle != nil {
		if err := s.Handle(ctx, req.GetValue()); err != nil {
			return nil, err
		}
	}
	return wrapperspb.String(s.Instance), nil
}

// Service is the Fetch method under one gRPC service name.
type Service struct {
	// Method is the full method name, "/<service>/Fetch".
	Method string
	desc   grpc.ServiceDesc
}

type fetcher interface {
	Fetch(context.Context, *wrapperspb.StringValue) (*wrapperspb.StringValue, error)
}

// New describes the service called name (e.g. "medmesh.examples.Clinical").
func New(name string) *Service {
	method := "/" + name + "/Fetch"
	return &Service{Method: method, desc: grpc.ServiceDesc{
		ServiceName: name,
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
				info := &grpc.UnaryServerInfo{Server: srv, FullMethod: method}
				return ic(ctx, in, info, func(ctx context.Context, req any) (any, error) {
					return srv.(fetcher).Fetch(ctx, req.(*wrapperspb.StringValue))
				})
			},
		}},
		Metadata: name,
	}}
}

// Register adds the service, answered by s, to a gRPC server.
func (svc *Service) Register(r grpc.ServiceRegistrar, s *Server) { r.RegisterService(&svc.desc, s) }

// Fetch calls the service on a connection and returns the serving instance.
func (svc *Service) Fetch(ctx context.Context, cc grpc.ClientConnInterface, kind string, opts ...grpc.CallOption) (string, error) {
	out := new(wrapperspb.StringValue)
	if err := cc.Invoke(ctx, svc.Method, wrapperspb.String(kind), out, opts...); err != nil {
		return "", err
	}
	return out.GetValue(), nil
}
