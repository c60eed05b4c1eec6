package controlplane

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"k8s.io/client-go/kubernetes"

	"medmesh/controlplane/admin"
	"medmesh/controlplane/adminauth"
)

// AdminAuth says who may read and who may act on the admin API, and on
// which extra ports it is served (package adminauth has the rules). The
// zero value is the safe one: health and metrics for anyone, everything
// else refused with 401.
type AdminAuth struct {
	// TLSListen serves the whole admin API over HTTPS as well, with a
	// serving certificate from the CA for TLSHosts; callers may present a
	// client certificate from the CA (spiffe://<td>/admin/<role>/<name>).
	// "" : no TLS port. Needs the CA (Identities).
	TLSListen string
	TLSHosts  []string
	// MetricsListen serves only /healthz, /readyz and /metrics, so a
	// NetworkPolicy can admit scrapers and probes there and nothing else.
	MetricsListen string
	// Kube checks bearer tokens (TokenReview, then SubjectAccessReview on
	// medmesh.io controlplanes); nil: bearer tokens are refused.
	Kube kubernetes.Interface
	// DevLoopback lets loopback callers without credentials read and act
	// (the controlplane command sets it with --dev).
	DevLoopback bool
	// Trail receives a FHIR AuditEvent line per audited call; nil: the
	// audit is in the log only.
	Trail *adminauth.Trail
}

// newGuard builds the admin API's guard from the options (New calls it).
func (cp *ControlPlane) newGuard() (*adminauth.Guard, error) {
	td, err := spiffeid.TrustDomainFromString(cp.opts.TrustDomain)
	if err != nil {
		return nil, fmt.Errorf("controlplane: trust domain %q: %w", cp.opts.TrustDomain, err)
	}
	a := cp.opts.AdminAuth
	g := &adminauth.Guard{
		Authenticators: []adminauth.Authenticator{adminauth.MTLS{TrustDomain: td}},
		DevLoopback:    a.DevLoopback,
		Audit:          adminauth.NewAuditor(cp.log.With("component", "admin"), a.Trail, cp.reg),
	}
	if a.Kube != nil {
		g.Authenticators = append(g.Authenticators, &adminauth.Kube{Client: a.Kube})
	}
	if a.TLSListen != "" {
		if _, ok := cp.opts.Identities.(adminauth.CertSource); !ok {
			return nil, errors.New("controlplane: the admin TLS port needs medmesh's CA (mTLS on): its certificate and its callers' come from it")
		}
	}
	return g, nil
}

// adminExtra are the optional TLS admin and metrics-only servers.
type adminExtra struct {
	servers          []*http.Server
	tlsAddr, metAddr net.Addr
}

// listenAdminExtra binds the optional ports before Run reports started,
// so a bad address fails at start; serve starts them.
func (cp *ControlPlane) listenAdminExtra(o admin.Options, errc chan<- error) (*adminExtra, error) {
	a := cp.opts.AdminAuth
	x := &adminExtra{}
	if a.TLSListen != "" {
		td, _ := spiffeid.TrustDomainFromString(cp.opts.TrustDomain)
		cfg, err := adminauth.ServerTLS(cp.opts.Identities.(adminauth.CertSource), td, a.TLSHosts, cp.log)
		if err != nil {
			return nil, err
		}
		l, err := net.Listen("tcp", a.TLSListen)
		if err != nil {
			return nil, fmt.Errorf("admin TLS listen %s: %w", a.TLSListen, err)
		}
		srv := admin.NewServer(o)
		srv.TLSConfig = cfg
		x.servers, x.tlsAddr = append(x.servers, srv), l.Addr()
		go func() { errc <- srv.ServeTLS(l, "", "") }()
	}
	if a.MetricsListen != "" {
		l, err := net.Listen("tcp", a.MetricsListen)
		if err != nil {
			x.shutdown(context.Background())
			return nil, fmt.Errorf("metrics listen %s: %w", a.MetricsListen, err)
		}
		srv := admin.NewMetricsServer(o)
		x.servers, x.metAddr = append(x.servers, srv), l.Addr()
		go func() { errc <- srv.Serve(l) }()
	}
	return x, nil
}

func (x *adminExtra) shutdown(ctx context.Context) {
	for _, s := range x.servers {
		_ = s.Shutdown(ctx)
	}
}

// AdminTLSAddr is the admin TLS listen address (nil without one), once
// Run has started listening.
func (cp *ControlPlane) AdminTLSAddr() net.Addr { <-cp.started; return cp.extra.tlsAddr }

// MetricsAddr is the metrics-only listen address (nil without one).
func (cp *ControlPlane) MetricsAddr() net.Addr { <-cp.started; return cp.extra.metAddr }
