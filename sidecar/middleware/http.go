// Package middleware applies the PHI sidecar's core (classification,
// tags, priority admission, audit) inside Go services that have no Envoy
// in front of them: proxyless gRPC services and plain net/http servers.
// The semantics match the ext_proc extension: inbound tag headers are
// replaced, the caller's SPIFFE ID (from its mTLS certificate) caps its
// priority, a refused request is answered at once (503 / UNAVAILABLE
// with retry-after), and the slot is held until the response starts, so
// a long stream (vitals, WebSocket) does not pin a slot for its lifetime.
package middleware

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"medmesh/sidecar/phi"
	"medmesh/sidecar/sched"
)

// HTTP wraps next with the PHI core.
func HTTP(e *phi.Engine, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		in := phi.Input{
			Method: r.Method, Path: r.URL.RequestURI(), Header: flatten(r.Header),
			Caller: callerFromTLS(r.TLS), PeerAddress: hostOf(r.RemoteAddr),
		}
		a, err := e.Admit(httpTraceContext(r), in)
		if err != nil {
			if errors.Is(err, sched.ErrShed) {
				setTags(w.Header(), a.Decision)
				w.Header().Set("Retry-After", strconv.Itoa(phi.RetryAfter(err)))
				http.Error(w, fmt.Sprintf("medmesh: %s request shed; retry later", a.Priority), http.StatusServiceUnavailable)
			}
			// Otherwise the client went away while queued: nobody to answer.
			return
		}
		setTags(r.Header, a.Decision)
		sw := &statusWriter{ResponseWriter: w, a: a}
		defer func() {
			if p := recover(); p != nil {
				a.Done(0, "handler panicked")
				panic(p)
			}
			// A handler that wrote nothing gets net/http's implicit 200.
			a.Done(sw.statusOr(http.StatusOK), "")
		}()
		next.ServeHTTP(sw, r)
	})
}

func setTags(h http.Header, d phi.Decision) {
	for _, kv := range d.Tags() {
		h.Set(kv[0], kv[1]) // Set replaces every inbound value
	}
}

// flatten lower-cases names and joins repeated values, as Envoy does.
func flatten(h http.Header) map[string]string {
	out := make(map[string]string, len(h))
	for k, vs := range h {
		out[strings.ToLower(k)] = strings.Join(vs, ",")
	}
	return out
}

func hostOf(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}

// callerFromTLS is the caller's SPIFFE ID from its client certificate,
// or "" (no mTLS, or not an SVID). The certificate must have been
// verified by the server's TLS configuration (RequireAndVerifyClientCert
// with the mesh bundle, or grpc-go's xDS credentials): this function
// only reads it, and an unverified SAN would let a caller claim any
// identity's priority.
func callerFromTLS(cs *tls.ConnectionState) string {
	if cs == nil || len(cs.PeerCertificates) == 0 {
		return ""
	}
	id, err := x509svid.IDFromCert(cs.PeerCertificates[0])
	if err != nil {
		return ""
	}
	return id.String()
}

// statusWriter frees the slot when the response starts.
type statusWriter struct {
	http.ResponseWriter
	a      *phi.Admission
	status atomic.Int32
}

func (w *statusWriter) started(code int) {
	if w.status.CompareAndSwap(0, int32(code)) {
		w.a.Done(code, "")
	}
}

func (w *statusWriter) statusOr(def int) int {
	if s := w.status.Load(); s != 0 {
		return int(s)
	}
	return def
}

func (w *statusWriter) WriteHeader(code int) {
	if code >= 200 { // 1xx are informational: the response has not started
		w.started(code)
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	w.started(http.StatusOK)
	return w.ResponseWriter.Write(b)
}

// Flush keeps streaming responses (server-sent events) working.
func (w *statusWriter) Flush() {
	w.started(http.StatusOK)
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Hijack keeps WebSocket upgrades working; the upgrade is the response.
func (w *statusWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	h, ok := w.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("medmesh middleware: the underlying ResponseWriter cannot hijack")
	}
	w.started(http.StatusSwitchingProtocols)
	return h.Hijack()
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
