// Package adminauth decides who may read and who may act on the control
// plane's admin HTTP API. One wrapper (Guard.Wrap) sits around the whole
// admin mux and classifies every request by method and path, so a route
// added later (a new GET page) is protected without anyone remembering to:
//
//   - Open: GET /healthz, /readyz, /metrics; no credentials, ever (kubelet
//     probes and Prometheus scrape them).
//   - Read: every other GET (or HEAD): /debug/*, /ui, ... Topology is
//     sensitive in a hospital, so it needs the read role.
//   - Operate: every other method (POST /join-tokens, /ca/rotate,
//     /ca/renew-svids, ...). Operate implies read.
//
// Callers prove who they are with what medmesh already has: an X.509
// client certificate from its CA whose SPIFFE ID names the role
// (spiffe://<td>/admin/read/<name>, .../admin/operate/<name>), or a
// Kubernetes bearer token checked with TokenReview and authorized with a
// SubjectAccessReview on the medmesh.io "controlplanes" resource. In
// development (--dev) a loopback caller without credentials may read and
// act. No credentials: 401; credentials without the role: 403. Every
// mutating call and every refusal is audited (Auditor).
package adminauth

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"
)

// Role is what a caller may do; each role includes the ones below it.
type Role int

const (
	// RoleNone: authenticated (or not) but granted nothing, e.g. a
	// workload's SVID presented to the admin port.
	RoleNone Role = iota
	RoleRead
	RoleOperate
)

func (r Role) String() string {
	switch r {
	case RoleRead:
		return "read"
	case RoleOperate:
		return "operate"
	}
	return "none"
}

// ParseRole parses "read" or "operate".
func ParseRole(s string) (Role, error) {
	switch s {
	case "read":
		return RoleRead, nil
	case "operate":
		return RoleOperate, nil
	}
	return RoleNone, fmt.Errorf("role %q: want read or operate", s)
}

// Class is the role a request needs; Open needs none.
type Class = Role

// Open is the class of the health and metrics routes.
const Open = RoleNone

// openPaths answer anyone: probes and scrapers carry no credentials.
var openPaths = map[string]bool{"/healthz": true, "/readyz": true, "/metrics": true}

// Classify returns what r needs, from its method and path only.
func Classify(r *http.Request) Class {
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		if openPaths[r.URL.Path] {
			return Open
		}
		return RoleRead
	}
	return RoleOperate
}

// IsOpenPath reports whether path is one of the open routes (the
// metrics-only listener serves exactly these).
func IsOpenPath(path string) bool { return openPaths[path] }

// Principal is an authenticated caller.
type Principal struct {
	// ID names the caller in logs and the audit trail: a SPIFFE ID, a
	// Kubernetes user name, or "dev-loopback". Never a secret.
	ID string
	// Via is how it was authenticated: "mtls", "kubernetes" or "dev".
	Via  string
	Role Role
}

// ErrRefused wraps a credential that was checked and is not valid (401).
// Any other Authenticate error is the checker's own failure (503).
var ErrRefused = errors.New("credentials refused")

// Authenticator finds and checks one kind of credential. ok is false when
// r carries none of its kind; err is non-nil when it carries one that
// fails (wrapping ErrRefused) or cannot be checked now.
type Authenticator interface {
	Authenticate(r *http.Request) (p Principal, ok bool, err error)
}

// Guard authorizes admin requests.
type Guard struct {
	// Authenticators are tried in order; the first that finds its kind of
	// credential decides.
	Authenticators []Authenticator
	// DevLoopback lets loopback callers without credentials read and act
	// (--dev only: any local process, including every workload on the
	// host, then holds the operate role).
	DevLoopback bool
	// Audit records mutating calls and refusals; nil: not recorded.
	Audit *Auditor
}

// Wrap returns next behind the guard. A nil Guard accepts no
// credentials: health and metrics only.
func (g *Guard) Wrap(next http.Handler) http.Handler {
	if g == nil {
		g = &Guard{}
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		need := Classify(r)
		if need == Open {
			next.ServeHTTP(w, r)
			return
		}
		start := time.Now()
		p, err := g.authenticate(r)
		refuse := func(status int, reason, msg string) {
			if status == http.StatusUnauthorized {
				// Both schemes this API understands; a browser then offers
				// its client certificate on the TLS port.
				w.Header().Set("WWW-Authenticate", `Bearer realm="medmesh-admin"`)
			}
			http.Error(w, msg, status)
			g.Audit.Record(Record{Start: start, Principal: p, Request: r, Status: status, Reason: reason, Need: need})
		}
		switch {
		case errors.Is(err, ErrRefused) || (err == nil && p.Via == ""):
			reason := "no credentials"
			if err != nil {
				reason = err.Error()
			}
			refuse(http.StatusUnauthorized, reason, "401 unauthorized: "+reason+"; present a client certificate from medmesh's CA "+
				"(medmesh ca admin-cert) on the TLS admin port, or a Kubernetes bearer token")
			return
		case err != nil:
			refuse(http.StatusServiceUnavailable, "authentication unavailable: "+err.Error(), "503: cannot check credentials now: "+err.Error())
			return
		case p.Role < need:
			reason := fmt.Sprintf("%s has role %s, %s %s needs %s", p.ID, p.Role, r.Method, r.URL.Path, need)
			refuse(http.StatusForbidden, reason, "403 forbidden: "+reason)
			return
		}
		r = r.WithContext(withPrincipal(r.Context(), p))
		if need < RoleOperate {
			// Not wrapped: a page may stream (http.Flusher) and reads are
			// only counted, not recorded.
			g.Audit.Record(Record{Start: start, Principal: p, Request: r, Need: need})
			next.ServeHTTP(w, r)
			return
		}
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		g.Audit.Record(Record{Start: start, Principal: p, Request: r, Status: sw.status(), Need: need})
	})
}

// authenticate returns the caller; a zero Principal with no error means
// no credentials were presented.
func (g *Guard) authenticate(r *http.Request) (Principal, error) {
	for _, a := range g.Authenticators {
		p, ok, err := a.Authenticate(r)
		if ok || err != nil {
			return p, err
		}
	}
	if g.DevLoopback && isLoopback(r.RemoteAddr) {
		return Principal{ID: "dev-loopback", Via: "dev", Role: RoleOperate}, nil
	}
	return Principal{}, nil
}

func isLoopback(remote string) bool {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	ip, err := netip.ParseAddr(strings.TrimPrefix(strings.TrimSuffix(host, "]"), "["))
	return err == nil && ip.Unmap().IsLoopback()
}

// statusWriter remembers the status a handler sent, for the audit record.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (s *statusWriter) WriteHeader(code int) {
	if s.code == 0 {
		s.code = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.code == 0 {
		s.code = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

func (s *statusWriter) status() int {
	if s.code == 0 {
		return http.StatusOK
	}
	return s.code
}
