package vitalsvc

import (
	"context"

	"google.golang.org/grpc"

	"medmesh/examples/vitals/frame"
	"medmesh/examples/vitals/vitalsrpc"
)

// ForwardTo forwards to the nurse station service on cc (through the
// mesh: meshapp.Dial("nurse-station")), one Deliver stream per device
// connection.
func ForwardTo(cc grpc.ClientConnInterface) Forwarder { return grpcForwarder{cc} }

type grpcForwarder struct{ cc grpc.ClientConnInterface }

func (g grpcForwarder) Open(ctx context.Context, device string) (Sink, error) {
	st, err := vitalsrpc.OpenDeliver(ctx, g.cc, device)
	if err != nil {
		return nil, err
	}
	return grpcSink{st}, nil
}

type grpcSink struct {
	st grpc.BidiStreamingClient[vitalsrpc.Msg, vitalsrpc.Msg]
}

func (s grpcSink) Send(raw []byte) error { return s.st.Send(&vitalsrpc.Msg{Value: raw}) }

// Acked waits for the nurse station's next Ack.
func (s grpcSink) Acked() (uint64, error) {
	for {
		m, err := s.st.Recv()
		if err != nil {
			return 0, err
		}
		if f, err := frame.Decode(m.GetValue()); err == nil && f.Type == frame.TypeAck {
			return f.Seq, nil
		}
	}
}

func (s grpcSink) Close() error { return s.st.CloseSend() }
