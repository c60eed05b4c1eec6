// Package clinical is the small gRPC service every example service (EMR,
// HIS, imaging) speaks, so the demo and the integration tests exercise the
// mesh with real gRPC calls. It is internal/fetchrpc's hand-written
// service under the name medmesh.examples.Clinical.
//
// Requests carry only a record kind ("Patient", "Observation", ...) and a
// synthetic reference; no example ever handles real patient data.
package clinical

import (
	"context"

	"google.golang.org/grpc"

	"medmesh/internal/fetchrpc"
)

// ServiceName is the gRPC service name.
const ServiceName = "medmesh.examples.Clinical"

// FetchMethod is the full method name of Fetch.
const FetchMethod = "/" + ServiceName + "/Fetch"

// Server answers Fetch with the instance that served it.
type Server = fetchrpc.Server

var service = fetchrpc.New(ServiceName)

// Register adds the clinical service to a gRPC server.
func Register(r grpc.ServiceRegistrar, s *Server) { service.Register(r, s) }

// Fetch calls Fetch on a connection and returns the serving instance.
func Fetch(ctx context.Context, cc grpc.ClientConnInterface, kind string, opts ...grpc.CallOption) (string, error) {
	return service.Fetch(ctx, cc, kind, opts...)
}
