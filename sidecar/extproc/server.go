// Package extproc serves Envoy's External Processing API
// (envoy.service.ext_proc.v3): per HTTP request, Envoy opens a stream,
// sends the request headers, and waits for our answer before it forwards
// the request. We classify, tag and admit the request there, so the
// priority queue sits in front of the upstream while Envoy holds the
// request; the slot is released when Envoy sends the response headers
// or the stream ends, whichever comes first.
//
// It owns the protocol only (the decisions are sidecar/phi's) and the
// socket and gRPC server it is served on; sidecar/run assembles the
// process around it.
package extproc

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync/atomic"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"medmesh/api/wire"
	"medmesh/sidecar/phi"
	"medmesh/sidecar/sched"
)

// Attribute names the control plane asks Envoy to send
// (request_attributes) and where Envoy puts them.
const (
	AttrNamespace = wire.ExtProcAttrNamespace
	AttrPeerURI   = wire.ExtProcAttrPeerURI
	AttrSource    = wire.ExtProcAttrSource
)

// Limits on what one request may present; Envoy enforces its own
// (60 KiB of headers by default), these only keep a misbehaving client
// of this API from making us do unbounded work.
const (
	maxHeaders     = 512
	maxHeaderBytes = 256 << 10
)

// Server implements ExternalProcessorServer.
type Server struct {
	extprocv3.UnimplementedExternalProcessorServer
	engine  *phi.Engine
	log     *slog.Logger
	answers *answers
	// encoded: the gRPC server passes *encoded answers through (its codec
	// is ours, NewGRPCServer); otherwise their messages are sent.
	encoded bool
	// Streams and ProtocolErrors are counters for /metrics and tests.
	Streams        atomic.Int64
	ProtocolErrors atomic.Int64
	Panics         atomic.Int64
}

// New returns a server using engine.
func New(engine *phi.Engine, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{engine: engine, log: log, answers: newAnswers()}
}

// Process handles one HTTP request's stream.
func (s *Server) Process(stream extprocv3.ExternalProcessor_ProcessServer) (err error) {
	s.Streams.Add(1)
	defer s.Streams.Add(-1)
	var adm *phi.Admission
	defer func() {
		// Whatever happened (EOF, reset, error, panic), the slot is freed
		// and the audit record written. Done is a no-op if already done.
		if adm != nil {
			adm.Done(0, "stream ended before the response")
		}
	}()
	defer func() {
		if r := recover(); r != nil {
			s.Panics.Add(1)
			s.log.Error("ext_proc stream panicked; stream closed", "panic", fmt.Sprint(r))
			err = status.Error(codes.Internal, "medmesh ext_proc: internal error")
		}
	}()
	ctx := stream.Context()
	seenRequest := false
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			if ctx.Err() != nil {
				return status.FromContextError(ctx.Err()).Err()
			}
			return err
		}
		var resp *extprocv3.ProcessingResponse
		var enc *encoded
		switch v := req.GetRequest().(type) {
		case *extprocv3.ProcessingRequest_RequestHeaders:
			if seenRequest {
				s.ProtocolErrors.Add(1)
				return status.Error(codes.FailedPrecondition, "medmesh ext_proc: request_headers sent twice on one stream")
			}
			seenRequest = true
			in := input(req, v.RequestHeaders)
			actx := ctx
			if s.engine.Tracing() {
				actx = traceContext(ctx, v.RequestHeaders.GetHeaders())
			}
			a, err := s.engine.Admit(actx, in)
			switch {
			case err == nil:
				adm = a
				enc = s.answers.admitted(a.Decision)
			case errors.Is(err, sched.ErrShed):
				resp = refused(a.Decision, err, isGRPC(in.Header))
			default:
				// Envoy went away while the request was queued.
				return status.FromContextError(err).Err()
			}
		case *extprocv3.ProcessingRequest_ResponseHeaders:
			if !seenRequest {
				// Out of order: nothing to release. Answer with a no-op so
				// Envoy is not left waiting, and count it.
				s.ProtocolErrors.Add(1)
			}
			if adm != nil {
				adm.Done(responseStatus(v.ResponseHeaders), "")
			}
			enc = s.answers.responseHeaders
		case *extprocv3.ProcessingRequest_RequestBody:
			enc = s.answers.requestBody
		case *extprocv3.ProcessingRequest_ResponseBody:
			enc = s.answers.responseBody
		case *extprocv3.ProcessingRequest_RequestTrailers:
			enc = s.answers.requestTrailers
		case *extprocv3.ProcessingRequest_ResponseTrailers:
			if adm != nil {
				adm.Done(200, "")
			}
			enc = s.answers.responseTrailers
		default:
			s.ProtocolErrors.Add(1)
			return status.Error(codes.InvalidArgument, "medmesh ext_proc: message carries no request phase")
		}
		if err := s.send(stream, resp, enc); err != nil {
			return err
		}
	}
}

// send sends enc if set, else resp.
func (s *Server) send(stream extprocv3.ExternalProcessor_ProcessServer, resp *extprocv3.ProcessingResponse, enc *encoded) error {
	switch {
	case enc == nil:
		return stream.Send(resp)
	case s.encoded:
		return stream.SendMsg(enc)
	default:
		return stream.Send(enc.msg)
	}
}

// input turns Envoy's headers and attributes into the engine's input.
func input(req *extprocv3.ProcessingRequest, h *extprocv3.HttpHeaders) phi.Input {
	hdr := Headers(h.GetHeaders())
	in := phi.Input{Method: hdr[":method"], Path: hdr[":path"], Header: hdr}
	for _, attrs := range []map[string]*structpb.Struct{req.GetAttributes(), h.GetAttributes()} {
		if a := attrs[AttrNamespace]; a != nil {
			if v := a.GetFields()[AttrPeerURI].GetStringValue(); strings.HasPrefix(v, "spiffe://") {
				in.Caller = v
			}
			if v := a.GetFields()[AttrSource].GetStringValue(); v != "" {
				if host, _, err := net.SplitHostPort(v); err == nil {
					v = host
				}
				in.PeerAddress = v
			}
		}
	}
	return in
}

// Headers flattens an Envoy header map: names lower-cased, repeated
// headers joined with ",", raw_value preferred (Envoy sends header values
// there), bounded in count and size.
func Headers(m *corev3.HeaderMap) map[string]string {
	out := make(map[string]string, len(m.GetHeaders()))
	total := 0
	for i, h := range m.GetHeaders() {
		if i >= maxHeaders {
			break
		}
		v := h.GetValue()
		if raw := h.GetRawValue(); len(raw) > 0 {
			v = string(raw)
		}
		total += len(h.GetKey()) + len(v)
		if total > maxHeaderBytes {
			break
		}
		k := strings.ToLower(h.GetKey())
		if prev, ok := out[k]; ok {
			v = prev + "," + v
		}
		out[k] = v
	}
	return out
}

func isGRPC(h map[string]string) bool {
	return strings.HasPrefix(h["content-type"], "application/grpc")
}

func responseStatus(h *extprocv3.HttpHeaders) int {
	for _, hv := range h.GetHeaders().GetHeaders() {
		if hv.GetKey() == ":status" {
			v := hv.GetValue()
			if raw := hv.GetRawValue(); len(raw) > 0 {
				v = string(raw)
			}
			if n, err := strconv.Atoi(v); err == nil && n >= 100 && n <= 599 {
				return n
			}
		}
	}
	// No usable status: the response started, so treat it as delivered.
	return 200
}

func setHeader(k, v string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{
		Header:       &corev3.HeaderValue{Key: k, RawValue: []byte(v)},
		AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
	}
}

func tagMutation(d phi.Decision) *extprocv3.HeaderMutation {
	m := &extprocv3.HeaderMutation{}
	for _, kv := range d.Tags() {
		m.SetHeaders = append(m.SetHeaders, setHeader(kv[0], kv[1]))
	}
	return m
}

// Metadata is the dynamic metadata for a decision, under the medmesh
// namespace (the filter's metadata_options.receiving_namespaces).
func Metadata(d phi.Decision, shed bool) *structpb.Struct {
	return &structpb.Struct{Fields: map[string]*structpb.Value{
		phi.MetadataNamespace: structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{
			"phi":      structpb.NewBoolValue(d.PHI),
			"priority": structpb.NewStringValue(d.Priority.String()),
			"class":    structpb.NewStringValue(d.Class),
			"rule":     structpb.NewStringValue(d.Rule),
			"shed":     structpb.NewBoolValue(shed),
		}}),
	}}
}

func admitted(d phi.Decision) *extprocv3.ProcessingResponse {
	return &extprocv3.ProcessingResponse{
		Response: &extprocv3.ProcessingResponse_RequestHeaders{RequestHeaders: &extprocv3.HeadersResponse{
			Response: &extprocv3.CommonResponse{HeaderMutation: tagMutation(d)},
		}},
		DynamicMetadata: Metadata(d, false),
	}
}

// refused answers at once with 503 and a retry-after; details name the
// reason in Envoy's response-code-details style (no spaces).
func refused(d phi.Decision, err error, grpc bool) *extprocv3.ProcessingResponse {
	reason := "overloaded"
	var se *sched.ShedError
	if errors.As(err, &se) {
		reason = se.Reason
	}
	m := tagMutation(d)
	m.SetHeaders = append(m.SetHeaders,
		setHeader("retry-after", strconv.Itoa(phi.RetryAfter(err))),
		setHeader("content-type", "text/plain"))
	ir := &extprocv3.ImmediateResponse{
		Status:  &typev3.HttpStatus{Code: typev3.StatusCode_ServiceUnavailable},
		Headers: m,
		Body:    []byte("medmesh: " + d.Priority.String() + " request shed (" + reason + "); retry later\n"),
		Details: "medmesh_shed_" + strings.NewReplacer(" ", "_").Replace(reason),
	}
	if grpc {
		ir.GrpcStatus = &extprocv3.GrpcStatus{Status: uint32(codes.Unavailable)}
	}
	return &extprocv3.ProcessingResponse{
		Response:        &extprocv3.ProcessingResponse_ImmediateResponse{ImmediateResponse: ir},
		DynamicMetadata: Metadata(d, true),
	}
}
