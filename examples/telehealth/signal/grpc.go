package signal

import (
	"context"
	"encoding/json"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
)

// ServiceName is the gRPC service of the signalling door for services.
const ServiceName = "medmesh.examples.telehealth.Signal"

// JoinMethod is the full name of its one method, a bidirectional stream
// per party: the party's messages up, the server's and the other party's
// down.
const JoinMethod = "/" + ServiceName + "/Join"

// codecName is the gRPC content subtype of the messages
// ("application/grpc+json"): the same JSON as the WebSocket door, so one
// Message type serves both and no generated code is needed.
const codecName = "json"

type jsonCodec struct{}

func (jsonCodec) Marshal(v any) ([]byte, error)      { return json.Marshal(v) }
func (jsonCodec) Unmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }
func (jsonCodec) Name() string                       { return codecName }

func init() { encoding.RegisterCodec(jsonCodec{}) }

// joiner is what the service description dispatches to.
type joiner interface {
	serveStream(grpc.ServerStream) error
}

var joinStream = grpc.StreamDesc{
	StreamName:    "Join",
	Handler:       func(srv any, s grpc.ServerStream) error { return srv.(joiner).serveStream(s) },
	ServerStreams: true,
	ClientStreams: true,
}

var serviceDesc = grpc.ServiceDesc{
	ServiceName: ServiceName,
	HandlerType: (*joiner)(nil),
	Streams:     []grpc.StreamDesc{joinStream},
	Metadata:    ServiceName,
}

// RegisterGRPC adds the signalling service to a gRPC server (an
// xds.GRPCServer in the mesh).
func (s *Server) RegisterGRPC(r grpc.ServiceRegistrar) { r.RegisterService(&serviceDesc, s) }

func (s *Server) serveStream(st grpc.ServerStream) error {
	who := CallerFromContext(st.Context())
	if !who.Mesh && s.opts.PlaintextOpens {
		who.Mesh = true
	}
	return s.Serve(st.Context(), grpcConn{st}, who)
}

// grpcConn adapts a stream (either side) to Conn.
type grpcConn struct{ s grpc.Stream }

func (c grpcConn) Send(_ context.Context, m Message) error { return c.s.SendMsg(&m) }

func (c grpcConn) Recv(context.Context) (Message, error) {
	var m Message
	err := c.s.RecvMsg(&m)
	return m, err
}

// ClientConn is a party's end of a Join stream.
type ClientConn interface {
	Conn
	// CloseSend tells the server this party is done.
	CloseSend() error
}

type clientConn struct {
	grpcConn
	cs grpc.ClientStream
}

func (c clientConn) CloseSend() error { return c.cs.CloseSend() }

// Dial opens a Join stream on cc (a connection to xds:///telehealth-signal
// in the mesh); the stream lives as long as ctx.
func Dial(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (ClientConn, error) {
	opts = append([]grpc.CallOption{grpc.CallContentSubtype(codecName)}, opts...)
	cs, err := cc.NewStream(ctx, &joinStream, JoinMethod, opts...)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", JoinMethod, err)
	}
	return clientConn{grpcConn{cs}, cs}, nil
}
