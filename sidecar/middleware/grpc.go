package middleware

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"medmesh/sidecar/phi"
	"medmesh/sidecar/sched"
)

// UnaryServerInterceptor applies the PHI core to unary calls.
func UnaryServerInterceptor(e *phi.Engine) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
		a, err := e.Admit(grpcTraceContext(ctx), grpcInput(ctx, info.FullMethod))
		if err != nil {
			return nil, refusal(ctx, a, err)
		}
		defer func() {
			if p := recover(); p != nil {
				a.Done(0, "handler panicked")
				panic(p)
			}
			a.Done(httpStatus(err), "")
		}()
		return handler(withTags(ctx, a.Decision), req)
	}
}

// StreamServerInterceptor applies the PHI core to streaming calls; the
// slot is freed when the server first sends (headers or a message) or
// the stream ends.
func StreamServerInterceptor(e *phi.Engine) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
		ctx := ss.Context()
		a, err := e.Admit(grpcTraceContext(ctx), grpcInput(ctx, info.FullMethod))
		if err != nil {
			return refusal(ctx, a, err)
		}
		w := &taggedStream{ServerStream: ss, ctx: withTags(ctx, a.Decision), a: a}
		defer func() {
			if p := recover(); p != nil {
				a.Done(0, "handler panicked")
				panic(p)
			}
			a.Done(httpStatus(err), "")
		}()
		return handler(srv, w)
	}
}

func refusal(ctx context.Context, a *phi.Admission, err error) error {
	if errors.Is(err, sched.ErrShed) {
		grpc.SetTrailer(ctx, metadata.Pairs("retry-after", strconv.Itoa(phi.RetryAfter(err))))
		return status.Error(codes.Unavailable, fmt.Sprintf("medmesh: %s request shed; retry later", a.Priority))
	}
	return status.FromContextError(err).Err()
}

type taggedStream struct {
	grpc.ServerStream
	ctx  context.Context
	a    *phi.Admission
	once sync.Once
}

func (s *taggedStream) Context() context.Context { return s.ctx }

func (s *taggedStream) start() { s.once.Do(func() { s.a.Done(http.StatusOK, "") }) }

func (s *taggedStream) SendHeader(md metadata.MD) error {
	s.start()
	return s.ServerStream.SendHeader(md)
}

func (s *taggedStream) SendMsg(m any) error {
	s.start()
	return s.ServerStream.SendMsg(m)
}

// grpcInput describes a call as ext_proc would see it through Envoy.
func grpcInput(ctx context.Context, fullMethod string) phi.Input {
	md, _ := metadata.FromIncomingContext(ctx)
	hdr := make(map[string]string, len(md)+1)
	for k, vs := range md {
		hdr[strings.ToLower(k)] = strings.Join(vs, ",")
	}
	if hdr["content-type"] == "" {
		hdr["content-type"] = "application/grpc"
	}
	in := phi.Input{Method: http.MethodPost, Path: fullMethod, Header: hdr}
	if p, ok := peer.FromContext(ctx); ok {
		if p.Addr != nil {
			in.PeerAddress = hostOf(p.Addr.String())
		}
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok {
			in.Caller = callerFromTLS(&ti.State)
		}
	}
	return in
}

// withTags replaces the tag keys in the incoming metadata, so handlers
// (and anything they forward) see medmesh's values, never the caller's.
func withTags(ctx context.Context, d phi.Decision) context.Context {
	md, _ := metadata.FromIncomingContext(ctx)
	md = md.Copy()
	for _, kv := range d.Tags() {
		md.Set(kv[0], kv[1])
	}
	return metadata.NewIncomingContext(ctx, md)
}

// httpStatus maps a handler's result to the status the audit trail and
// the adaptive limit see: server-side failures count as drops.
func httpStatus(err error) int {
	switch status.Code(err) {
	case codes.OK:
		return http.StatusOK
	case codes.Canceled:
		return 0
	case codes.InvalidArgument, codes.NotFound, codes.AlreadyExists, codes.FailedPrecondition, codes.OutOfRange:
		return http.StatusBadRequest
	case codes.PermissionDenied:
		return http.StatusForbidden
	case codes.Unauthenticated:
		return http.StatusUnauthorized
	case codes.DeadlineExceeded:
		return http.StatusGatewayTimeout
	case codes.Unavailable, codes.ResourceExhausted:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}
