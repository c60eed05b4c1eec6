package adminauth

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"medmesh/certs"
)

var td = spiffeid.RequireTrustDomainFromString("medmesh.local")

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		method, path string
		want         Class
	}{
		{"GET", "/healthz", Open}, {"GET", "/readyz", Open}, {"GET", "/metrics", Open}, {"HEAD", "/metrics", Open},
		{"GET", "/debug/proxies", RoleRead}, {"GET", "/ui", RoleRead}, {"GET", "/ui/trace/abc", RoleRead},
		// A route nobody registered yet is Read too: new GET pages are
		// protected by default.
		{"GET", "/some/future/page", RoleRead},
		{"POST", "/join-tokens", RoleOperate}, {"POST", "/ca/rotate", RoleOperate}, {"POST", "/ca/renew-svids", RoleOperate},
		{"POST", "/metrics", RoleOperate}, {"DELETE", "/debug/proxies", RoleOperate}, {"OPTIONS", "/healthz", RoleOperate},
	} {
		r, _ := http.NewRequest(tc.method, "http://x"+tc.path, nil)
		if got := Classify(r); got != tc.want {
			t.Errorf("%s %s: class %s, want %s", tc.method, tc.path, got, tc.want)
		}
	}
}

func TestRoleOf(t *testing.T) {
	for id, want := range map[string]Role{
		"spiffe://medmesh.local/admin/read/alice":    RoleRead,
		"spiffe://medmesh.local/admin/operate/bob":   RoleOperate,
		"spiffe://medmesh.local/admin/root/eve":      RoleNone,
		"spiffe://medmesh.local/admin/operate":       RoleNone,
		"spiffe://medmesh.local/admin/operate/a/b":   RoleNone,
		"spiffe://medmesh.local/ns/default/svc/emr":  RoleNone,
		"spiffe://other.example/admin/operate/alice": RoleNone,
	} {
		if got := RoleOf(spiffeid.RequireFromString(id), td); got != want {
			t.Errorf("RoleOf(%s) = %s, want %s", id, got, want)
		}
	}
	if _, err := AdminID(td, RoleRead, "a/b"); err == nil {
		t.Error("AdminID accepted a name with a slash (a deeper identity)")
	}
}

// fixture is a guarded admin handler on a plain and a TLS listener with a
// real CA and a real audit trail.
type fixture struct {
	ca               *certs.CA
	plain, tls       string // base URLs
	trailPath        string
	reg              *prometheus.Registry
	roots            *x509.CertPool
	logs             *strings.Builder
	trail            *Trail
	servedOperations int
}

func newFixture(t *testing.T, g *Guard) *fixture {
	t.Helper()
	dir := t.TempDir()
	ca, err := certs.New(certs.Options{TrustDomain: td.Name(), StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{ca: ca, trailPath: filepath.Join(dir, "admin-audit.jsonl"), reg: prometheus.NewRegistry(), logs: &strings.Builder{}}
	f.trail, err = OpenTrail(f.trailPath, "medmesh-controlplane")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.trail.Close() })
	log := slog.New(slog.NewJSONHandler(f.logs, nil))
	g.Audit = NewAuditor(log, f.trail, f.reg)
	g.Authenticators = append([]Authenticator{MTLS{TrustDomain: td}}, g.Authenticators...)

	mux := http.NewServeMux()
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "metrics\n") })
	mux.HandleFunc("GET /", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "page "+r.URL.Path+"\n") })
	mux.HandleFunc("POST /join-tokens", func(w http.ResponseWriter, r *http.Request) {
		p, _ := PrincipalFrom(r.Context())
		f.servedOperations++
		io.WriteString(w, "token for "+p.ID+"\n")
	})
	h := g.Wrap(mux)

	serve := func(cfg *tls.Config) string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: h, TLSConfig: cfg}
		t.Cleanup(func() { srv.Close() })
		if cfg == nil {
			go srv.Serve(l)
			return "http://" + l.Addr().String()
		}
		go srv.ServeTLS(l, "", "")
		return "https://" + l.Addr().String()
	}
	f.plain = serve(nil)
	cfg, err := ServerTLS(ca, td, []string{"127.0.0.1"}, log)
	if err != nil {
		t.Fatal(err)
	}
	f.tls = serve(cfg)
	f.roots = x509.NewCertPool()
	for _, c := range ca.Bundle().X509Authorities() {
		f.roots.AddCert(c)
	}
	return f
}

// client presents an SVID for id (nil: no client certificate).
func (f *fixture) client(t *testing.T, id *spiffeid.ID) *http.Client {
	t.Helper()
	cfg := &tls.Config{RootCAs: f.roots, MinVersion: tls.VersionTLS12}
	if id != nil {
		svid, err := f.ca.NewSVID(*id)
		if err != nil {
			t.Fatal(err)
		}
		cfg = tlsconfig.MTLSWebClientConfig(svid, f.roots)
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
}

func call(t *testing.T, c *http.Client, method, url string, header ...string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// trail reads the audit trail's FHIR AuditEvents.
func (f *fixture) trailRecords(t *testing.T) []map[string]any {
	t.Helper()
	file, err := os.Open(f.trailPath)
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	var out []map[string]any
	sc := bufio.NewScanner(file)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("audit line %q: %v", sc.Text(), err)
		}
		out = append(out, m)
	}
	return out
}

// summary is "who method class outcomeDesc" of one AuditEvent.
func summary(ev map[string]any) string {
	agents := ev["agent"].([]any)
	who := agents[0].(map[string]any)["who"].(map[string]any)["identifier"].(map[string]any)["value"]
	ent := ev["entity"].([]any)[0].(map[string]any)["detail"].([]any)
	class := ent[0].(map[string]any)["valueString"]
	method := ev["subtype"].([]any)[0].(map[string]any)["code"]
	return who.(string) + " " + method.(string) + " " + class.(string) + " " + ev["outcomeDesc"].(string)
}

func TestUnauthenticatedAndWrongRole(t *testing.T) {
	g := &Guard{}
	f := newFixture(t, g)
	anon := &http.Client{Timeout: 10 * time.Second}
	// Metrics stay scrapeable without credentials, on both ports.
	if code, body := call(t, anon, "GET", f.plain+"/metrics"); code != 200 || body != "metrics\n" {
		t.Errorf("GET /metrics without credentials: %d %q, want 200", code, body)
	}
	if code, _ := call(t, f.client(t, nil), "GET", f.tls+"/metrics"); code != 200 {
		t.Errorf("GET /metrics over TLS without a client certificate: %d, want 200", code)
	}
	for _, c := range []struct {
		method, url string
	}{{"GET", f.plain + "/debug/proxies"}, {"GET", f.plain + "/ui"}, {"POST", f.plain + "/join-tokens?service=emr"},
		{"GET", f.tls + "/debug/proxies"}, {"POST", f.tls + "/join-tokens?service=emr"}} {
		cl := anon
		if strings.HasPrefix(c.url, "https") {
			cl = f.client(t, nil)
		}
		code, body := call(t, cl, c.method, c.url)
		if code != http.StatusUnauthorized || !strings.Contains(body, "no credentials") {
			t.Errorf("%s %s without credentials: %d %q, want 401 naming the missing credentials", c.method, c.url, code, body)
		}
	}
	// Loopback is not trusted without --dev.
	workload := spiffeid.RequireFromString("spiffe://medmesh.local/ns/default/svc/emr")
	reader := spiffeid.RequireFromString("spiffe://medmesh.local/admin/read/alice")
	if code, body := call(t, f.client(t, &workload), "GET", f.tls+"/debug/proxies"); code != http.StatusForbidden || !strings.Contains(body, "role none") {
		t.Errorf("a workload SVID reading /debug: %d %q, want 403 (workloads have no admin role)", code, body)
	}
	if code, body := call(t, f.client(t, &reader), "POST", f.tls+"/join-tokens?service=emr"); code != http.StatusForbidden || !strings.Contains(body, "needs operate") {
		t.Errorf("the read role minting a join token: %d %q, want 403", code, body)
	}
	if code, _ := call(t, anon, "POST", f.plain+"/join-tokens", "Authorization", "Bearer tok-SECRET-123"); code != http.StatusUnauthorized {
		t.Errorf("a bearer token with no Kubernetes configured: %d, want 401", code)
	}
	if f.servedOperations != 0 {
		t.Fatalf("%d refused operations reached the handler", f.servedOperations)
	}

	want := []string{
		"unauthenticated POST admin /join-tokens 401", "unauthenticated POST admin /join-tokens 401",
		"spiffe://medmesh.local/ns/default/svc/emr GET admin /debug/proxies 403",
		"spiffe://medmesh.local/admin/read/alice POST admin /join-tokens 403",
	}
	var got []string
	for _, ev := range f.trailRecords(t) {
		got = append(got, summary(ev))
		if ev["resourceType"] != "AuditEvent" || ev["outcome"] != "4" {
			t.Errorf("refusal recorded as %v outcome %v, want an AuditEvent with outcome 4", ev["resourceType"], ev["outcome"])
		}
	}
	for _, w := range want {
		if !strings.Contains(strings.Join(got, "\n"), w) {
			t.Errorf("audit trail lacks %q; it has:\n%s", w, strings.Join(got, "\n"))
		}
	}
	// Every refused call: 3 anonymous GETs, 2 anonymous POSTs, 1 workload
	// GET, 1 reader POST, 1 bad token.
	if len(got) != 8 {
		t.Errorf("audit trail has %d records, want 8 (every refusal):\n%s", len(got), strings.Join(got, "\n"))
	}
	if n := testutil.ToFloat64(g.Audit.decisions.WithLabelValues("operate", "unauthenticated")); n != 3 {
		t.Errorf("medmesh_admin_requests_total{role=operate,outcome=unauthenticated} = %v, want 3", n)
	}
	if strings.Contains(f.logs.String(), "tok-SECRET-123") {
		t.Error("the bearer token appears in the log")
	}
}

func TestRoles(t *testing.T) {
	f := newFixture(t, &Guard{})
	reader := spiffeid.RequireFromString("spiffe://medmesh.local/admin/read/alice")
	operator := spiffeid.RequireFromString("spiffe://medmesh.local/admin/operate/bob")
	for _, id := range []spiffeid.ID{reader, operator} {
		c := f.client(t, &id)
		// /debug, /ui and any GET page another change adds: the read role.
		for _, path := range []string{"/debug/proxies", "/ui", "/ui/changes", "/debug/config"} {
			if code, body := call(t, c, "GET", f.tls+path); code != 200 || body != "page "+path+"\n" {
				t.Errorf("%s GET %s: %d %q, want 200", id, path, code, body)
			}
		}
	}
	code, body := call(t, f.client(t, &operator), "POST", f.tls+"/join-tokens?service=emr")
	if code != 200 || body != "token for "+operator.String()+"\n" {
		t.Errorf("operator POST /join-tokens: %d %q, want 200 with the operator as the handler's principal", code, body)
	}
	// Reads are not recorded; the one operation is, with who and outcome.
	recs := f.trailRecords(t)
	if len(recs) != 1 || summary(recs[0]) != operator.String()+" POST admin /join-tokens 200" || recs[0]["outcome"] != "0" {
		t.Fatalf("audit trail: %v, want the operator's POST alone, outcome 0", recs)
	}
	if strings.Contains(f.logs.String(), "service=emr") {
		t.Error("the query string reached the audit log")
	}

	// A certificate from another CA does not get through the handshake.
	other, err := certs.New(certs.Options{TrustDomain: td.Name(), StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	svid, err := other.NewSVID(operator)
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsconfig.MTLSWebClientConfig(svid, f.roots)}}
	if resp, err := c.Post(f.tls+"/join-tokens", "", nil); err == nil {
		resp.Body.Close()
		t.Fatalf("a client certificate from a foreign CA: %s, want the handshake refused", resp.Status)
	}
}

func TestDevLoopback(t *testing.T) {
	f := newFixture(t, &Guard{DevLoopback: true})
	anon := &http.Client{Timeout: 10 * time.Second}
	if code, _ := call(t, anon, "GET", f.plain+"/debug/proxies"); code != 200 {
		t.Errorf("--dev, loopback, no credentials, GET /debug: %d, want 200", code)
	}
	if code, body := call(t, anon, "POST", f.plain+"/join-tokens"); code != 200 || body != "token for dev-loopback\n" {
		t.Errorf("--dev, loopback, no credentials, POST: %d %q, want 200", code, body)
	}
	// Credentials that are presented are still judged.
	reader := spiffeid.RequireFromString("spiffe://medmesh.local/admin/read/alice")
	if code, _ := call(t, f.client(t, &reader), "POST", f.tls+"/join-tokens"); code != http.StatusForbidden {
		t.Errorf("--dev does not lift a presented read certificate to operate: got %d, want 403", code)
	}
	recs := f.trailRecords(t)
	if len(recs) != 2 || summary(recs[0]) != "dev-loopback POST admin /join-tokens 200" {
		t.Errorf("audit trail under --dev: %v", recs)
	}
	for _, remote := range []string{"127.0.0.1:5", "[::1]:5", "[::ffff:127.0.0.1]:5"} {
		if !isLoopback(remote) {
			t.Errorf("%s is loopback", remote)
		}
	}
	for _, remote := range []string{"10.0.0.1:5", "[fe80::1]:5", "garbage"} {
		if isLoopback(remote) {
			t.Errorf("%s is not loopback", remote)
		}
	}
}
