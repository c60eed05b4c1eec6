// Package controlplane runs medmesh's control plane: Options, New and Run
// start the xDS server, the admin HTTP server, the registry and policy
// sources, and the loop that ties them together.
//
// One goroutine (loop.go) owns the round state. Sources, the xDS tracker
// and the identity manager only signal it; changes are coalesced. Each
// round (round.go) builds the IR once from the catalog, policies and
// trust bundle, identifies the connected proxies and hands both to
// xds.Publish; a failure at any step keeps the last good configuration in
// place. The jobs themselves live in packages that name them: ir,
// translate, xds, identity, policy, attest, inject, bootstrap.
package controlplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"medmesh/api/wire"
	"medmesh/controlplane/admin"
	"medmesh/controlplane/adminauth"
	"medmesh/controlplane/identity"
	"medmesh/controlplane/ir"
	"medmesh/controlplane/policy"
	"medmesh/controlplane/residency"
	"medmesh/controlplane/xds"
	"medmesh/registry"
)

// Options configure a control plane.
type Options struct {
	Logger *slog.Logger
	Source registry.Source
	// Policies is the source of operators' policies; nil: none. With one,
	// nothing is published until its first set arrived, so proxies never
	// see the mesh without its policies.
	Policies    policy.Source
	Defaults    ir.Defaults
	TrustDomain string
	// Site is the edge site this control plane serves (`--site`, a DNS
	// label; wire.ValidateSite), "" for a single-site control plane. The
	// CA already puts it in the SPIFFE IDs it issues; this copy is for
	// what else depends on the site (peering, residency, status).
	Site string
	// ResidencyPolicy is the Rego policy deciding which flows to other
	// sites' services may be routed (--residency-policy, watched); nil
	// with a Site: the default (PHI stays on its site). Without a Site no
	// other site's instance is ever routed.
	ResidencyPolicy *residency.File
	// StateDir keeps the last good catalog on disk so an edge site serves
	// its mesh after a restart without the registry. Empty: memory only.
	StateDir    string
	XDSListen   string
	AdminListen string
	// AdminAuth is who may read and act on the admin API, and its
	// optional TLS and metrics-only ports.
	AdminAuth AdminAuth
	// Coalesce gathers bursts of changes into one reconciliation.
	Coalesce time.Duration
	// EmptyCatalogGrace is how long a catalog that suddenly lists no
	// services must stay empty before it is believed: a registry that
	// restarted with an empty store must not wipe out the mesh.
	EmptyCatalogGrace time.Duration
	// Identities is the SPIFFE CA. With it, every hop is mTLS; nil leaves
	// the mesh in plaintext.
	Identities identity.CA
	// Dev trusts proxies on loopback without proof of identity.
	Dev bool
	// Attestors check the proofs of identity proxies present, by kind
	// (Kubernetes service-account tokens, Consul ACL tokens). Join tokens
	// are the control plane's own and always accepted.
	Attestors map[wire.ProofKind]identity.Attestor
	// Registry receives the Prometheus metrics; nil makes a new one.
	Registry *prometheus.Registry
	// TracerProvider traces each round (a configuration change) from its
	// trigger to every proxy's ACK; nil: OTel's global provider, which
	// exports nothing unless internal/telemetry configured it.
	TracerProvider trace.TracerProvider
	// EnvoyTracing gives Envoy sidecars request tracing to an OTLP
	// collector (--envoy-otlp-address); zero: off.
	EnvoyTracing ir.EnvoyTracing
	// TraceQueryURL is the trace backend's query API (Jaeger's HTTP API,
	// e.g. http://jaeger:16686) the status page reads traces from; empty:
	// the page lists changes without opening them.
	TraceQueryURL string
}

// ControlPlane is a running control plane.
type ControlPlane struct {
	opts    Options
	log     *slog.Logger
	xds     *xds.Server
	metrics *metrics
	reg     *prometheus.Registry
	tracer  trace.Tracer

	xdsAddr, adminAddr net.Addr
	started            chan struct{}

	ids *identity.Manager
	// residency decides cross-site flows; the loop alone calls it.
	residency *residency.Decider
	// wake asks the loop to reconcile: a proof check finished, or an
	// operator asked for something.
	wake chan struct{}

	guard *adminauth.Guard
	extra *adminExtra

	mu    sync.RWMutex
	state admin.View // what the admin endpoints show; written by the loop only
	// changes are the recent rounds that changed something (changes.go).
	changes *admin.ChangeLog
}

// New validates options and fills in defaults.
func New(opts Options) (*ControlPlane, error) {
	if opts.Source == nil {
		return nil, errors.New("controlplane: no catalog source")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.TrustDomain == "" {
		opts.TrustDomain = "medmesh.local"
	}
	if opts.XDSListen == "" {
		opts.XDSListen = wire.DefaultXDSAddress
	}
	if opts.AdminListen == "" {
		opts.AdminListen = wire.DefaultAdminAddress
	}
	if opts.Coalesce <= 0 {
		opts.Coalesce = 20 * time.Millisecond
	}
	if opts.EmptyCatalogGrace <= 0 {
		opts.EmptyCatalogGrace = time.Minute
	}
	if opts.Defaults == (ir.Defaults{}) {
		opts.Defaults = ir.DefaultDefaults()
	}
	if opts.TracerProvider == nil {
		opts.TracerProvider = otel.GetTracerProvider()
	}
	reg := opts.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	cp := &ControlPlane{opts: opts, log: opts.Logger, reg: reg, metrics: newMetrics(reg), started: make(chan struct{}),
		wake: make(chan struct{}, 1), tracer: opts.TracerProvider.Tracer("medmesh/controlplane"), changes: admin.NewChangeLog(0)}
	if opts.Site != "" {
		var p *residency.Policy // nil: the default
		if opts.ResidencyPolicy != nil {
			var err error
			if p, err = opts.ResidencyPolicy.Load(); err != nil {
				return nil, err // names file:line; nothing runs on a policy that does not compile
			}
		}
		cp.residency = residency.NewDecider(p)
	}
	var err error
	if cp.guard, err = cp.newGuard(); err != nil {
		return nil, err
	}
	cp.ids = identity.New(identity.Options{CA: opts.Identities, Attestors: opts.Attestors, Dev: opts.Dev,
		Logger: opts.Logger, Wake: cp.nudge})
	reg.MustRegister(cp.ids.Collector(), peerCollector{opts.Source})
	return cp, nil
}

// nudge wakes the loop without blocking.
func (cp *ControlPlane) nudge() {
	select {
	case cp.wake <- struct{}{}:
	default:
	}
}

// view returns the loop's latest view (the admin server reads it).
func (cp *ControlPlane) view() admin.View {
	cp.mu.RLock()
	defer cp.mu.RUnlock()
	return cp.state
}

// XDSAddr is the xDS listen address, once Run has started listening.
func (cp *ControlPlane) XDSAddr() net.Addr { <-cp.started; return cp.xdsAddr }

// AdminAddr is the admin listen address, once Run has started listening.
func (cp *ControlPlane) AdminAddr() net.Addr { <-cp.started; return cp.adminAddr }

// Ready reports whether a configuration is being served.
func (cp *ControlPlane) Ready() bool { return cp.view().Ready }

// XDS exposes the xDS server (tests and benchmarks read its tracker).
func (cp *ControlPlane) XDS() *xds.Server { <-cp.started; return cp.xds }

// Run serves until ctx ends.
func (cp *ControlPlane) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cp.xds = xds.New(ctx, cp.log, cp.reg)

	xl, err := net.Listen("tcp", cp.opts.XDSListen)
	if err != nil {
		return fmt.Errorf("xds listen %s: %w", cp.opts.XDSListen, err)
	}
	al, err := net.Listen("tcp", cp.opts.AdminListen)
	if err != nil {
		xl.Close()
		return fmt.Errorf("admin listen %s: %w", cp.opts.AdminListen, err)
	}
	cp.xdsAddr, cp.adminAddr = xl.Addr(), al.Addr()

	g := grpc.NewServer(
		grpc.MaxConcurrentStreams(1<<20),
		// Thousands of mostly idle streams: release each connection's write
		// buffer between writes instead of holding 32 KiB per proxy.
		grpc.SharedWriteBuffer(true),
		// Proxies hold ADS streams open for days; keepalives find dead
		// ones behind NATs and unreliable edge uplinks.
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	)
	cp.xds.Register(g)
	adminOpts := admin.Options{Logger: cp.log, Gatherer: cp.reg, Source: cp.opts.Source,
		Policies: cp.opts.Policies, XDS: cp.xds, Identities: cp.ids, MTLS: cp.opts.Identities != nil, View: cp.view,
		Site: cp.opts.Site, Residency: cp.residency, ResidencyPolicy: cp.opts.ResidencyPolicy, Guard: cp.guard,
		Changes: cp.changes, TraceQueryURL: cp.opts.TraceQueryURL}
	adminSrv := admin.NewServer(adminOpts)
	errc := make(chan error, 8)
	if cp.extra, err = cp.listenAdminExtra(adminOpts, errc); err != nil {
		xl.Close()
		al.Close()
		return err
	}
	close(cp.started)

	go func() { errc <- g.Serve(xl) }()
	go func() { errc <- adminSrv.Serve(al) }()

	catalogs := make(chan *registry.Catalog, 1)
	go func() {
		if err := cp.opts.Source.Run(ctx, catalogs); err != nil && ctx.Err() == nil {
			errc <- fmt.Errorf("catalog source %s: %w", cp.opts.Source.Name(), err)
		}
	}()
	cp.log.Info("control plane started", "xds", cp.xdsAddr.String(), "admin", cp.adminAddr.String(),
		"source", cp.opts.Source.Name(), "trustDomain", cp.opts.TrustDomain)

	var sets chan *policy.Set // nil without a source: never ready
	if cp.opts.Policies != nil {
		sets = make(chan *policy.Set, 1)
		go func() {
			if err := cp.opts.Policies.Run(ctx, sets); err != nil && ctx.Err() == nil {
				errc <- fmt.Errorf("policy source %s: %w", cp.opts.Policies.Name(), err)
			}
		}()
	}
	var policies chan *residency.Policy // nil without a watched file
	if cp.residency != nil && cp.opts.ResidencyPolicy != nil {
		policies = make(chan *residency.Policy, 1)
		go func() {
			if err := cp.opts.ResidencyPolicy.Run(ctx, policies); err != nil && ctx.Err() == nil {
				// A broken edit never gets here (the file source keeps the
				// last good policy); the file vanishing at start does.
				cp.log.Error("residency policy source stopped; the policy in force stays", "err", err)
			}
		}()
	}
	loopErr := make(chan error, 1)
	go func() { loopErr <- cp.loop(ctx, catalogs, sets, policies) }()

	select {
	case <-ctx.Done():
		err = nil
	case err = <-errc:
	}
	cancel()
	// Not GracefulStop: proxies hold xDS streams open indefinitely, so a
	// graceful stop would wait forever; they reconnect and resync.
	g.Stop()
	shutdownCtx, done := context.WithTimeout(context.Background(), 2*time.Second)
	defer done()
	_ = adminSrv.Shutdown(shutdownCtx)
	cp.extra.shutdown(shutdownCtx)
	<-loopErr
	return err
}
