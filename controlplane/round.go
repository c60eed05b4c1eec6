package controlplane

import (
	"context"
	"fmt"
	"sort"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"medmesh/api/wire"
	"medmesh/controlplane/identity"
	"medmesh/controlplane/ir"
	"medmesh/controlplane/policy"
	"medmesh/controlplane/xds"
)

// reconcile runs one round: it builds the IR when an input changed, works
// out who every connected proxy is and which identity it holds, and asks
// xds to publish. It says what to publish; xds decides in which order the
// caches are touched.
//
// Each round that publishes is one trace (a new root: a change is not
// part of whatever else is going on): the root span names what triggered
// it and the catalog version, with children for the IR build and the
// publication, under which xds adds a span per proxy push that ends with
// the proxy's ACK or NACK.
func (cp *ControlPlane) reconcile(ctx context.Context, st *loopState) (err error) {
	if st.catalog == nil {
		return nil // nothing known yet: push nothing rather than an empty mesh
	}
	if cp.opts.Policies != nil && st.policySet == nil {
		return nil // a mesh without its policies would flap canaries and access
	}
	built := st.mesh == nil
	stages := cp.stageTimer(st)
	ctx, span := cp.tracer.Start(ctx, "medmesh.config_change", trace.WithNewRoot(), trace.WithAttributes(
		attribute.StringSlice("medmesh.trigger", st.triggers), attribute.String("medmesh.catalog.version", st.catalogHash),
		attribute.Bool("medmesh.mesh.rebuilt", built), attribute.String("medmesh.site", cp.opts.Site)))
	change := cp.startChange(span, st.triggers, built)
	st.triggers = st.triggers[:0]
	defer func() {
		if err != nil {
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
	}()
	var pol *policy.Result
	if built {
		_, bspan := cp.tracer.Start(ctx, "ir.build")
		pol = cp.resolvePolicies(st)
		in := ir.Inputs{Catalog: st.catalog, Defaults: cp.opts.Defaults, TrustDomain: cp.opts.TrustDomain,
			Site: cp.opts.Site, EnvoyTracing: cp.opts.EnvoyTracing}
		if cp.residency != nil {
			in.Residency = residencyAdapter{cp.residency}
		}
		if pol != nil {
			in.Policies = pol.Policies
		}
		if cp.opts.Identities != nil {
			cp.bundleChanged(st)
			in.MTLS, in.BundlePEM = true, []byte(st.bundle)
		}
		st.mesh = ir.Build(in)
		bspan.SetAttributes(attribute.Int("medmesh.services", len(st.mesh.Services)))
		bspan.End()
	}
	stages.mark(stageBuild)
	ictx, ispan := cp.tracer.Start(ctx, "identity")
	proxies := cp.identifyAll(ictx, st.mesh)
	ispan.SetAttributes(attribute.Int("medmesh.xds.proxies", len(proxies)))
	ispan.End()
	pctx, pspan := cp.tracer.Start(ctx, "xds.publish")
	report, err := cp.xds.Publish(pctx, xds.Round{Mesh: st.mesh, Proxies: proxies, Start: st.since})
	change.done(report, err)
	if err != nil {
		pspan.SetStatus(codes.Error, err.Error())
	}
	pspan.End()
	if err != nil {
		st.mesh = nil // translate it afresh on the retry
		return err
	}
	st.since = time.Time{}
	stages.mark(stagePublish)
	cp.mu.Lock()
	if built {
		cp.state.Catalog = st.catalog
		cp.state.Mesh, cp.state.Warnings = st.mesh, report.Warnings
		if pol != nil {
			cp.state.Policies = pol
		}
		cp.state.CatalogFrom = cp.opts.Source.Name()
		if st.fromDisk {
			cp.state.CatalogFrom = "disk"
		}
		cp.state.LastChange = time.Now()
	}
	cp.state.Ready = true
	if len(report.Failed) == 0 {
		cp.state.LastError = ""
	}
	cp.mu.Unlock()
	if built {
		for _, w := range report.Warnings {
			cp.log.Warn("configuration warning", "warning", w)
		}
		// After the view: proxies already hold this configuration, and
		// status must say so without waiting for the disk (fsync).
		cp.saveCatalog(st.catalog)
	}
	if n := len(report.Failed); n > 0 {
		return fmt.Errorf("%d proxies kept their previous configuration: %w", n, report.Failed[0])
	}
	return nil
}

// identifyAll resolves every connected proxy: the instance it fronts and,
// with mTLS, the identity it holds. Proxies that left are forgotten by the
// identity manager here, and by xds when it publishes the round.
func (cp *ControlPlane) identifyAll(ctx context.Context, mesh *ir.Mesh) []xds.RoundProxy {
	clients := cp.xds.Tracker().Connected()
	// SVID agents first: an Envoy may be vouched for by its pod's agent,
	// which must be attested before it (identity.Manager.coLocated).
	sort.SliceStable(clients, func(i, j int) bool {
		return clients[i].Kind == wire.ProxySVIDAgent && clients[j].Kind != wire.ProxySVIDAgent
	})
	out := make([]xds.RoundProxy, 0, len(clients))
	live := make(map[string]bool, len(clients))
	for _, c := range clients {
		live[c.ID] = true
		rp := xds.RoundProxy{Proxy: ir.Proxy{ID: c.ID, Service: c.Service, Kind: c.Kind}}
		if svc, inst, ok := mesh.Instance(c.ID); ok && (c.Service == "" || c.Service == svc.Name) {
			rp.Proxy.Service, rp.Proxy.Instance = svc.Name, inst
		}
		if mesh.MTLS && c.Kind != wire.ProxyProxyless {
			ns := "default"
			if svc, ok := mesh.Service(rp.Proxy.Service); ok {
				ns = svc.Namespace
			}
			svid, err := cp.ids.Identify(ctx, identity.Claim{ID: c.ID, Service: rp.Proxy.Service, Namespace: ns,
				Kind: c.Kind, Peer: c.Peer, Proof: c.Proof})
			rp.SVID, rp.Err = svid, err
		}
		out = append(out, rp)
	}
	cp.ids.Forget(live)
	return out
}

// resolvePolicies resolves the latest policy set against the catalog and
// returns what is accepted. Objects whose standing changed are logged
// once, naming the object and the field. Returns nil when there is no
// policy source.
func (cp *ControlPlane) resolvePolicies(st *loopState) *policy.Result {
	if st.policySet == nil {
		return nil
	}
	res := policy.Resolve(st.policySet, policy.Options{
		Catalog: st.catalog, Defaults: cp.opts.Defaults, Previous: st.policyStatus, Now: time.Now(),
	})
	before := map[policy.Key]string{}
	for i := range st.policyStatus {
		before[st.policyStatus[i].Key] = st.policyStatus[i].Message()
	}
	for i := range res.Statuses {
		s := &res.Statuses[i]
		msg, seen := before[s.Key]
		switch {
		case s.Message() != "" && (s.Message() != msg || !seen):
			cp.log.Warn("policy not applied; the rest of the mesh keeps its configuration", "policy", s.Key.String(),
				"source", s.Source, "reason", s.Message())
		case s.Message() == "" && (msg != "" || !seen):
			cp.log.Info("policy in force", "policy", s.Key.String(), "service", s.Service)
		}
	}
	st.policyStatus = res.Statuses
	if w, ok := cp.opts.Policies.(policy.StatusWriter); ok {
		w.WriteStatuses(res.Statuses)
	}
	return res
}
