package extproc

import (
	"fmt"
	"sync"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	"medmesh/sidecar/classify"
	"medmesh/sidecar/phi"
)

// Why answers are encoded once: an admitted request's answer depends on
// its decision only (tags and dynamic metadata), and decisions come from
// a small vocabulary (priority x data class x rule). Building the answer
// for every request (a header mutation and a google.protobuf.Struct) and
// marshalling it (proto walks the Struct's maps by reflection) was the
// largest part of the extension's own cost per request, more than
// classification and admission together, and most of its garbage. So
// each distinct answer is built and marshalled once and its bytes are
// sent as they are; the codec below passes them through and hands every
// other message to gRPC's proto codec.

// encoded is a message marshalled once, sent as it is on any stream.
// The bytes are never written to after creation, so concurrent streams
// share them.
type encoded struct {
	b []byte
	// msg is the message the bytes encode (tests and the in-memory
	// stream of the benchmark read it back).
	msg *extprocv3.ProcessingResponse
}

func encode(m *extprocv3.ProcessingResponse) *encoded {
	b, err := proto.Marshal(m)
	if err != nil {
		// A message built from our own constant vocabulary always
		// marshals; failing here is a programming error.
		panic(fmt.Sprintf("medmesh ext_proc: marshal answer: %v", err))
	}
	return &encoded{b: b, msg: m}
}

// codec is gRPC's proto codec, except that it sends *encoded bytes as
// they are. Its name stays "proto": on the wire nothing changes.
type codec struct{ encoding.CodecV2 }

func newCodec() codec { return codec{encoding.GetCodecV2(grpcproto.Name)} }

func (c codec) Marshal(v any) (mem.BufferSlice, error) {
	if e, ok := v.(*encoded); ok {
		// SliceBuffer's Free is a no-op: gRPC never recycles these bytes.
		return mem.BufferSlice{mem.SliceBuffer(e.b)}, nil
	}
	return c.CodecV2.Marshal(v)
}

// answerKey is what an admitted request's answer depends on.
type answerKey struct {
	phi      bool
	priority classify.Priority
	class    string
	rule     string
}

// maxCachedAnswers bounds the cache. Classes and rules come from the rule
// file, never from request text, so the vocabulary is small; the bound
// only keeps a pathological rule file from growing it without limit (past
// it, answers are built per request, as before).
const maxCachedAnswers = 4096

// answers caches the encoded answer of each admitted decision, and the
// constant answers of the other phases.
type answers struct {
	mu sync.RWMutex
	m  map[answerKey]*encoded

	responseHeaders, requestBody, responseBody, requestTrailers, responseTrailers *encoded
}

func newAnswers() *answers {
	return &answers{
		m: map[answerKey]*encoded{},
		responseHeaders: encode(&extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseHeaders{
			ResponseHeaders: &extprocv3.HeadersResponse{}}}),
		// We never ask for bodies or trailers; if a misconfigured filter
		// sends them, they pass through unchanged rather than stall.
		requestBody: encode(&extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestBody{
			RequestBody: &extprocv3.BodyResponse{}}}),
		responseBody: encode(&extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{
			ResponseBody: &extprocv3.BodyResponse{}}}),
		requestTrailers: encode(&extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestTrailers{
			RequestTrailers: &extprocv3.TrailersResponse{}}}),
		responseTrailers: encode(&extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseTrailers{
			ResponseTrailers: &extprocv3.TrailersResponse{}}}),
	}
}

// admitted returns the encoded answer for an admitted decision.
func (a *answers) admitted(d phi.Decision) *encoded {
	k := answerKey{phi: d.PHI, priority: d.Priority, class: d.Class, rule: d.Rule}
	a.mu.RLock()
	e, ok := a.m[k]
	a.mu.RUnlock()
	if ok {
		return e
	}
	e = encode(admitted(d))
	a.mu.Lock()
	if len(a.m) < maxCachedAnswers {
		a.m[k] = e
	}
	a.mu.Unlock()
	return e
}
