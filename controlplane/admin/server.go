// Package admin serves the control plane's admin HTTP: health and
// readiness, Prometheus metrics, the /debug pages (proxies, config,
// catalog, policies) in api/admin's JSON, and the operator actions (join
// tokens, CA root rotation, renewing every SVID). It reads what the
// control loop last published (View) and the xDS and identity state; it
// changes nothing but through identity.Manager's concurrency-safe calls.
package admin

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"sort"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	api "medmesh/api/admin"
	"medmesh/controlplane/adminauth"
	"medmesh/controlplane/identity"
	"medmesh/controlplane/ir"
	"medmesh/controlplane/policy"
	"medmesh/controlplane/residency"
	"medmesh/controlplane/xds"
	"medmesh/registry"
)

// View is what the control loop last published, for readers. The loop
// replaces it whole; handlers never see a half-made one.
type View struct {
	Ready       bool
	Catalog     *registry.Catalog
	CatalogFrom string // source name, or "disk"
	Mesh        *ir.Mesh
	LastError   string
	LastChange  time.Time
	Warnings    []string
	// Policies is the last policy resolution; nil without a source.
	Policies *policy.Result
}

// Options are what the handlers read and act on.
type Options struct {
	Logger   *slog.Logger
	Gatherer prometheus.Gatherer
	Source   registry.Source
	// Policies is the policy source; nil: none.
	Policies   policy.Source
	XDS        *xds.Server
	Identities *identity.Manager
	// MTLS says a CA issues SVIDs (renew-svids has something to renew).
	MTLS bool
	// View returns the loop's latest view.
	View func() View
	// Site is the edge site served ("" for one site); Residency decides
	// what crosses sites and ResidencyPolicy is its watched file (either
	// may be nil).
	Site            string
	Residency       *residency.Decider
	ResidencyPolicy *residency.File
	// Guard decides who may read and act (adminauth); nil refuses all
	// but health and metrics.
	Guard *adminauth.Guard
	// Changes are the recent configuration changes and TraceQueryURL
	// the trace backend's query API, for the status page (ui.go).
	Changes       *ChangeLog
	TraceQueryURL string
}

type server struct{ Options }

// NewServer returns the admin HTTP server.
func NewServer(o Options) *http.Server {
	cp := &server{o}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", cp.handleReady)
	mux.Handle("GET /metrics", promhttp.HandlerFor(cp.Gatherer, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /debug/proxies", cp.handleProxies)
	mux.HandleFunc("GET /debug/config", cp.handleConfig)
	mux.HandleFunc("GET /debug/catalog", cp.handleCatalog)
	mux.HandleFunc("GET /debug/scope", cp.handleScope)
	mux.HandleFunc("GET /debug/policies", cp.handlePolicies)
	mux.HandleFunc("GET /debug/residency", cp.handleResidency)
	mux.HandleFunc("GET /ui", cp.handleUIPage)
	mux.HandleFunc("GET /ui/", cp.uiRoutes().ServeHTTP)
	// Issuing identity proofs: the operate role only (adminauth).
	mux.HandleFunc("POST /join-tokens", cp.handleJoinToken)
	mux.HandleFunc("POST /ca/rotate", cp.handleRotateRoot)
	mux.HandleFunc("POST /ca/renew-svids", cp.handleRenewSVIDs)
	// One guard around the whole mux: a route added here is Read (GET)
	// or Operate (any other method) without further ado.
	return &http.Server{Handler: o.Guard.Wrap(mux), ReadHeaderTimeout: 5 * time.Second}
}

func (cp *server) handleReady(w http.ResponseWriter, _ *http.Request) {
	if !cp.View().Ready {
		st := cp.Source.Status()
		w.WriteHeader(http.StatusServiceUnavailable)
		msg := "not ready: no catalog received yet from " + cp.Source.Name()
		if st.LastError != "" {
			msg += " (last error: " + st.LastError + ")"
		}
		w.Write([]byte(msg + "\n"))
		return
	}
	w.Write([]byte("ready\n"))
}

func (cp *server) handleProxies(w http.ResponseWriter, _ *http.Request) { writeJSON(w, cp.proxies()) }

// proxies is the body of /debug/proxies (the status page shows it too).
func (cp *server) proxies() api.ProxiesResponse {
	v := cp.View()
	resp := api.ProxiesResponse{
		Ready: v.Ready, Source: sourceStatus(cp.Source.Status()), Serving: v.CatalogFrom, Site: cp.Site,
		Error: v.LastError, Warnings: v.Warnings,
	}
	if v.Catalog != nil {
		resp.Services = len(v.Catalog.Services)
	}
	if v.Mesh != nil {
		resp.MTLS = v.Mesh.MTLS
		resp.UnresolvedIntentions = v.Mesh.UnresolvedIntentions
		for _, svc := range v.Mesh.Services {
			if svc.Permissive && resp.MTLS {
				resp.Permissive = append(resp.Permissive, svc.Name)
			}
		}
	}
	identities := cp.Identities.Statuses()
	for _, ps := range cp.XDS.Tracker().Statuses() {
		var published map[string]string
		if pub, ok := cp.XDS.PublishedFor(ps.ID); ok {
			published = pub.Versions
		}
		row := proxyRow(ps, published, identities[ps.ID])
		if _, scope, ok := cp.XDS.ScopeFor(ps.ID); ok {
			n := len(scope)
			row.Scope = &n
		}
		row.Problems = cp.XDS.ServerListenerProblems(ps)
		resp.Proxies = append(resp.Proxies, row)
	}
	return resp
}

// handleConfig shows what one proxy was sent, as Envoy's JSON.
func (cp *server) handleConfig(w http.ResponseWriter, r *http.Request) {
	node := r.URL.Query().Get("node")
	pub, ok := cp.XDS.PublishedFor(node)
	if !ok {
		http.Error(w, "no configuration published for node "+node, http.StatusNotFound)
		return
	}
	out := map[string][]json.RawMessage{}
	for typ, rs := range pub.Resources(cp.XDS) {
		for _, res := range rs {
			b, err := protojson.Marshal(redact(res.(proto.Message)))
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			out[typ] = append(out[typ], b)
		}
	}
	for _, v := range out {
		sort.Slice(v, func(i, j int) bool { return string(v[i]) < string(v[j]) })
	}
	resp := api.ConfigResponse{Node: node, Resources: out, Versions: pub.Versions}
	if service, scope, ok := cp.XDS.ScopeFor(node); ok {
		if m := cp.View().Mesh; m != nil {
			sr := scopeResponse(m, service)
			// What was sent, which may lag the mesh by a round.
			sr.Included, sr.Excluded = sentScope(sr, scope)
			resp.Scope = sr
		}
	}
	writeJSON(w, resp)
}

// handleScope explains a service's scope: GET /debug/scope?service=S. It
// needs no connected proxy, so an operator can check a caller before
// deploying it.
func (cp *server) handleScope(w http.ResponseWriter, r *http.Request) {
	svc := r.URL.Query().Get("service")
	if svc == "" {
		http.Error(w, "service is required: /debug/scope?service=NAME", http.StatusBadRequest)
		return
	}
	m := cp.View().Mesh
	if m == nil {
		http.Error(w, "no mesh yet: the control plane has not received a catalog", http.StatusServiceUnavailable)
		return
	}
	writeJSON(w, scopeResponse(m, svc))
}

func (cp *server) handleCatalog(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, cp.View().Catalog)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// redact removes private keys from secrets before they are shown: debug
// output ends up in tickets and chat, and a key there is a breach.
func redact(m proto.Message) proto.Message {
	sec, ok := m.(*tlsv3.Secret)
	if !ok || sec.GetTlsCertificate() == nil {
		return m
	}
	out := proto.Clone(sec).(*tlsv3.Secret)
	out.GetTlsCertificate().PrivateKey = &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "[redacted]"}}
	return out
}

// handleJoinToken issues a one-time join token:
// POST /join-tokens?service=emr[&namespace=default][&ttl=10m].
func (cp *server) handleJoinToken(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	svc, ns := q.Get("service"), q.Get("namespace")
	if svc == "" {
		http.Error(w, "service is required", http.StatusBadRequest)
		return
	}
	if ns == "" {
		ns = "default"
	}
	ttl := 10 * time.Minute
	if v := q.Get("ttl"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 || d > 24*time.Hour {
			http.Error(w, "ttl: want a duration up to 24h", http.StatusBadRequest)
			return
		}
		ttl = d
	}
	tok, err := cp.Identities.IssueJoinToken(ns, svc, ttl)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	cp.Logger.Info("join token issued", "service", svc, "namespace", ns, "ttl", ttl.String(), "from", r.RemoteAddr)
	writeJSON(w, api.JoinTokenResponse{Token: tok, Service: svc, Namespace: ns, Expires: time.Now().Add(ttl)})
}

// handleRotateRoot replaces the CA's root: POST /ca/rotate?overlap=24h.
// The old root stays in every proxy's bundle for the overlap, which must
// exceed the SVID lifetime so that every SVID it signed is renewed under
// the new root before it stops being trusted.
func (cp *server) handleRotateRoot(w http.ResponseWriter, r *http.Request) {
	if !cp.Identities.CanRotate() {
		http.Error(w, identity.ErrNoRotation.Error(), http.StatusConflict)
		return
	}
	overlap := 24 * time.Hour
	if v := r.URL.Query().Get("overlap"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			http.Error(w, "overlap: want a positive duration", http.StatusBadRequest)
			return
		}
		overlap = d
	}
	if err := cp.Identities.RotateRoot(overlap); err != nil {
		http.Error(w, err.Error(), http.StatusConflict)
		return
	}
	cp.Logger.Warn("CA root rotated; both roots are trusted during the overlap", "overlap", overlap.String(), "from", r.RemoteAddr)
	w.Write([]byte("rotated\n"))
}

// handleRenewSVIDs re-issues every proxy's SVID now:
// POST /ca/renew-svids (identity.Manager.RenewAll says why).
func (cp *server) handleRenewSVIDs(w http.ResponseWriter, _ *http.Request) {
	if !cp.MTLS {
		http.Error(w, "mTLS is off: there are no SVIDs to renew", http.StatusConflict)
		return
	}
	writeJSON(w, map[string]int64{"generation": cp.Identities.RenewAll()})
}
