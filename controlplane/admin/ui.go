package admin

import (
	"embed"
	"errors"
	"html/template"
	"io/fs"
	"net/http"
	"sort"
	"strings"
	"time"

	api "medmesh/api/admin"
)

// The status page for people (/ui): one HTML page, a stylesheet and a
// small hand-written script, embedded in the binary (no JavaScript build
// step). The page is a shell; the script fills it from /ui/api/status,
// which gathers what the /debug endpoints serve plus the identities and
// the recent configuration changes, and refreshes it every few seconds
// without reloading. A change or a request opens as a waterfall read
// through /ui/api/traces/{id} from the trace backend.

//go:embed ui
var uiFiles embed.FS

var uiPage = template.Must(template.ParseFS(uiFiles, "ui/index.html"))

// traceClient reads the trace backend; a backend that hangs must not
// hold a handler (and the page's request) for long.
var traceClient = &http.Client{Timeout: 10 * time.Second}

// uiRoutes serves everything under /ui/.
func (cp *server) uiRoutes() http.Handler {
	static, _ := fs.Sub(uiFiles, "ui/static")
	m := http.NewServeMux()
	m.Handle("GET /ui/static/", http.StripPrefix("/ui/static/", http.FileServerFS(static)))
	m.HandleFunc("GET /ui/api/status", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, cp.uiStatus()) })
	m.HandleFunc("GET /ui/api/traces/{id}", cp.handleTrace)
	m.HandleFunc("GET /ui/{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/ui", http.StatusMovedPermanently)
	})
	return m
}

func (cp *server) handleUIPage(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	// The page loads only its own script and style, and talks only to
	// this server: a control plane's page must not pull in anything else.
	w.Header().Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	site := cp.Site
	if site == "" {
		site = "single site"
	}
	if err := uiPage.Execute(w, struct{ Site string }{site}); err != nil {
		cp.Logger.Error("rendering the status page", "err", err)
	}
}

// uiStatus is the page's one read: the /debug bodies as they are, plus
// the catalog's services, the identities and the recent changes.
func (cp *server) uiStatus() api.UIStatus {
	st := api.UIStatus{
		Now: time.Now(), Proxies: cp.proxies(), Policies: cp.policies(), Residency: cp.residency(),
		Services: []api.ServiceStatus{}, Identity: []api.IdentityStatus{}, Changes: cp.Changes.Recent(),
	}
	if cat := cp.View().Catalog; cat != nil {
		for _, svc := range cat.Services {
			s := api.ServiceStatus{Name: svc.Name, Namespace: svc.Namespace, Kind: string(svc.Kind),
				Protocol: string(svc.Protocol), PHI: svc.PHI, Instances: []api.InstanceStatus{}}
			for _, in := range svc.Instances {
				s.Instances = append(s.Instances, api.InstanceStatus{ID: in.ID, Address: in.Address, Port: in.Port,
					Health: string(in.Health), Site: in.Locality.Site, Peer: in.Peer})
			}
			st.Services = append(st.Services, s)
		}
	}
	for id, d := range cp.Identities.Details() {
		st.Identity = append(st.Identity, api.IdentityStatus{Proxy: id, Identity: d.Status, IssuedAt: d.IssuedAt, NotAfter: d.NotAfter})
	}
	sort.Slice(st.Identity, func(i, j int) bool { return st.Identity[i].Proxy < st.Identity[j].Proxy })
	if base := cp.traceBase(); base != "" {
		st.Traces = api.TraceBackendStatus{Query: true, UIURL: base}
	}
	return st
}

// handleTrace reads one trace from the trace backend as a waterfall:
// GET /ui/api/traces/{id} (hex trace ID, as /debug/proxies and the
// change list show them, or as a request's traceparent carries it).
func (cp *server) handleTrace(w http.ResponseWriter, r *http.Request) {
	id := strings.ToLower(strings.TrimSpace(r.PathValue("id")))
	if !traceIDPattern.MatchString(id) {
		http.Error(w, "trace ID: want 16 or 32 hexadecimal digits", http.StatusBadRequest)
		return
	}
	base := cp.traceBase()
	if base == "" {
		http.Error(w, "no trace backend configured: start the control plane with --trace-query-url "+
			"(e.g. Jaeger's query API, http://jaeger:16686)", http.StatusNotFound)
		return
	}
	q := &traceQuery{base: base, client: traceClient}
	tr, err := q.get(r.Context(), id)
	switch {
	case errors.Is(err, errTraceNotFound):
		http.Error(w, "trace "+id+" is not in the trace backend (yet): spans are exported in batches, "+
			"and a sampled-out request has none", http.StatusNotFound)
		return
	case err != nil:
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	wf := waterfall(tr)
	wf.UIURL = base + "/trace/" + id
	writeJSON(w, wf)
}

// traceBase is the trace backend's base URL, without a trailing slash.
func (cp *server) traceBase() string { return strings.TrimRight(cp.TraceQueryURL, "/") }
