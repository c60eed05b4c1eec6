// Package vitalsrpc describes the vitals example's two gRPC services by
// hand, as internal/fetchrpc does for Fetch: no generated code. Every
// message is a wrapperspb.BytesValue holding one encoded frame
// (examples/vitals/frame), so the gRPC layer never parses vitals.
//
//   - medmesh.examples.Vitals/Stream: a bedside device's stream to the
//     vitals service at its site. The device sends Hello and data frames;
//     the service answers with Ack and ResendRequest frames.
//   - medmesh.examples.NurseStation/Deliver: the vitals service forwards
//     the frames of one device connection to a nurse station, in order,
//     with their original sequence numbers; the nurse station answers
//     with Acks of the reliable frames it has delivered, and the vitals
//     service acknowledges a frame to the device only then, so an
//     acknowledged frame has reached a nurse station.
//
// A device is named by a pseudonymous handle (a bed or device slot such
// as "bed-07", never a serial number or a patient reference) in the
// DeviceHeader metadata of both streams.
package vitalsrpc

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

const (
	// VitalsService and NurseService are the gRPC service names.
	VitalsService = "medmesh.examples.Vitals"
	NurseService  = "medmesh.examples.NurseStation"
	// StreamMethod and DeliverMethod are the full method names.
	StreamMethod  = "/" + VitalsService + "/Stream"
	DeliverMethod = "/" + NurseService + "/Deliver"
	// DeviceHeader carries the device's pseudonymous handle.
	DeviceHeader = "x-vitals-device"
)

// Msg is every message of both services: one encoded frame.
type Msg = wrapperspb.BytesValue

// DeviceStream is the vitals service's side of a device's stream.
type DeviceStream = grpc.BidiStreamingServer[Msg, Msg]

// DeliverStream is the nurse station's side of a forwarding stream.
type DeliverStream = grpc.BidiStreamingServer[Msg, Msg]

// VitalsServer serves devices.
type VitalsServer interface {
	Stream(DeviceStream) error
}

// NurseServer receives forwarded frames.
type NurseServer interface {
	Deliver(DeliverStream) error
}

var vitalsDesc = grpc.ServiceDesc{
	ServiceName: VitalsService,
	HandlerType: (*VitalsServer)(nil),
	Streams: []grpc.StreamDesc{{
		StreamName:    "Stream",
		ServerStreams: true,
		ClientStreams: true,
		Handler: func(srv any, stream grpc.ServerStream) error {
			return srv.(VitalsServer).Stream(&grpc.GenericServerStream[Msg, Msg]{ServerStream: stream})
		},
	}},
}

var nurseDesc = grpc.ServiceDesc{
	ServiceName: NurseService,
	HandlerType: (*NurseServer)(nil),
	Streams: []grpc.StreamDesc{{
		StreamName:    "Deliver",
		ServerStreams: true,
		ClientStreams: true,
		Handler: func(srv any, stream grpc.ServerStream) error {
			return srv.(NurseServer).Deliver(&grpc.GenericServerStream[Msg, Msg]{ServerStream: stream})
		},
	}},
}

// Registrar is a gRPC server.
type Registrar = grpc.ServiceRegistrar

// RegisterVitals adds the vitals service to a gRPC server.
func RegisterVitals(r Registrar, s VitalsServer) { r.RegisterService(&vitalsDesc, s) }

// RegisterNurse adds the nurse station service to a gRPC server.
func RegisterNurse(r Registrar, s NurseServer) { r.RegisterService(&nurseDesc, s) }

// OpenStream opens a device's stream to the vitals service.
func OpenStream(ctx context.Context, cc grpc.ClientConnInterface, device string, opts ...grpc.CallOption) (grpc.BidiStreamingClient[Msg, Msg], error) {
	ctx = metadata.AppendToOutgoingContext(ctx, DeviceHeader, device)
	s, err := cc.NewStream(ctx, &vitalsDesc.Streams[0], StreamMethod, opts...)
	if err != nil {
		return nil, err
	}
	return &grpc.GenericClientStream[Msg, Msg]{ClientStream: s}, nil
}

// OpenDeliver opens a forwarding stream for one device to a nurse station.
func OpenDeliver(ctx context.Context, cc grpc.ClientConnInterface, device string, opts ...grpc.CallOption) (grpc.BidiStreamingClient[Msg, Msg], error) {
	ctx = metadata.AppendToOutgoingContext(ctx, DeviceHeader, device)
	s, err := cc.NewStream(ctx, &nurseDesc.Streams[0], DeliverMethod, opts...)
	if err != nil {
		return nil, err
	}
	return &grpc.GenericClientStream[Msg, Msg]{ClientStream: s}, nil
}

// Device returns the device handle of an incoming stream, or "".
func Device(ctx context.Context) string {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get(DeviceHeader); len(v) == 1 {
		return v[0]
	}
	return ""
}
