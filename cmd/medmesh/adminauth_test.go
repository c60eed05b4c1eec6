package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"medmesh/internal/testutil"
)

// TestAdminCredentialsEndToEnd runs `medmesh controlplane` with the TLS
// admin port, the metrics port and an audit trail, mints certificates
// with `medmesh ca admin-cert` from its state directory, and drives the
// API with `medmesh status`: the read role reads, nobody without a
// certificate does, and only the operate role acts; the trail records
// the refusals and the act.
func TestAdminCredentialsEndToEnd(t *testing.T) {
	dir := t.TempDir()
	cat := filepath.Join(dir, "catalog.yaml")
	os.WriteFile(cat, []byte("services:\n- name: emr\n  instances:\n  - {id: emr-1, address: 10.0.0.1, port: 9101}\n"), 0o600)
	state, trail := filepath.Join(dir, "state"), filepath.Join(dir, "admin-audit.jsonl")
	plain, tlsAddr, metrics := testutil.FreeAddr(t), testutil.FreeAddr(t), testutil.FreeAddr(t)
	var stderr testutil.SyncBuffer
	done := make(chan int, 1)
	go func() {
		done <- run([]string{"controlplane", "--consul", "", "--catalog", cat, "--state-dir", state,
			"--xds-listen", "127.0.0.1:0", "--admin-listen", plain, "--admin-tls-listen", tlsAddr, "--metrics-listen", metrics,
			"--audit-log", trail}, &bytes.Buffer{}, &stderr)
	}()
	defer func() {
		syscall.Kill(os.Getpid(), syscall.SIGTERM) // caught by the command's NotifyContext
		if code := <-done; code != 0 {
			t.Errorf("control plane exit code %d: %s", code, stderr.String())
		}
	}()
	testutil.Poll(t, 15*time.Second, "the metrics port to answer /readyz without credentials", func() bool {
		resp, err := http.Get("http://" + metrics + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	if resp, err := http.Get("http://" + metrics + "/debug/proxies"); err != nil || resp.StatusCode != http.StatusNotFound {
		t.Errorf("the metrics port serves /debug/proxies: %v %v, want 404", resp.Status, err)
	}

	mint := func(name, role string) string {
		out := filepath.Join(dir, name)
		code, stdout, errs := runCmd("ca", "admin-cert", "--state-dir", state, "--name", name, "--role", role, "--ttl", "1h", "--out", out)
		if code != 0 || !strings.Contains(stdout, "spiffe://medmesh.local/admin/"+role+"/"+name) {
			t.Fatalf("ca admin-cert %s %s: %d %s %s", name, role, code, stdout, errs)
		}
		svid, err := x509svid.Load(filepath.Join(out, "svid.pem"), filepath.Join(out, "svid_key.pem"))
		if err != nil || svid.ID.String() != "spiffe://medmesh.local/admin/"+role+"/"+name {
			t.Fatalf("the minted certificate does not load as the SVID of %s: %v", name, err)
		}
		if fi, _ := os.Stat(filepath.Join(out, "svid_key.pem")); fi.Mode().Perm() != 0o600 {
			t.Errorf("key file mode %v, want 0600", fi.Mode().Perm())
		}
		return out
	}
	reader, operator := mint("alice", "read"), mint("bob", "operate")

	// The CLI presents the certificate; without one it is refused and says why.
	code, stdout, errs := runCmd("status", "--admin", tlsAddr, "--cert-dir", reader, "-o", "json")
	if code != 0 || !strings.Contains(stdout, `"ready"`) {
		t.Errorf("status with the read certificate: %d %s %s", code, stdout, errs)
	}
	for _, args := range [][]string{{"--admin", plain}, {"--admin", "https://" + tlsAddr, "--ca-file", filepath.Join(reader, "bundle.pem")}} {
		code, _, errs = runCmd(append([]string{"status"}, args...)...)
		if code != 1 || !strings.Contains(errs, "401") {
			t.Errorf("status %v without credentials: %d %q, want exit 1 reporting 401", args, code, errs)
		}
	}

	// Acting: the read role is refused, the operate role mints a token.
	post := func(certDir string) (int, string) {
		f := adminClientFlags{certDir: certDir}
		c, base, err := f.client(tlsAddr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := c.Post(base+"/join-tokens?service=emr", "", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b bytes.Buffer
		b.ReadFrom(resp.Body)
		return resp.StatusCode, b.String()
	}
	if code, body := post(reader); code != http.StatusForbidden {
		t.Errorf("read role POST /join-tokens: %d %s, want 403", code, body)
	}
	if code, body := post(operator); code != 200 || !strings.Contains(body, `"token"`) {
		t.Errorf("operate role POST /join-tokens: %d %s, want 200 with a token", code, body)
	}

	b, err := os.ReadFile(trail)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var ev struct {
			ResourceType string `json:"resourceType"`
			OutcomeDesc  string `json:"outcomeDesc"`
			Agent        []struct {
				Who struct {
					Identifier struct{ Value string } `json:"identifier"`
				} `json:"who"`
			} `json:"agent"`
		}
		if err := json.Unmarshal([]byte(l), &ev); err != nil || ev.ResourceType != "AuditEvent" {
			t.Fatalf("audit line %q: %v", l, err)
		}
		lines = append(lines, ev.Agent[0].Who.Identifier.Value+" "+ev.OutcomeDesc)
	}
	want := []string{"unauthenticated 401", "unauthenticated 401", "spiffe://medmesh.local/admin/read/alice 403", "spiffe://medmesh.local/admin/operate/bob 200"}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Errorf("audit trail:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
	if strings.Contains(string(b), "service=emr") {
		t.Error("the trail holds the query string")
	}
}

func TestAdminCertRefusals(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--name", "alice", "--out", dir}, "give either --state-dir"},
		{[]string{"--name", "alice", "--out", dir, "--state-dir", dir}, "no CA root there"},
		{[]string{"--name", "alice", "--out", dir, "--state-dir", dir, "--role", "admin"}, `role "admin"`},
		{[]string{"--out", dir, "--state-dir", dir}, "--name is required"},
	} {
		code, _, errs := runCmd(append([]string{"ca", "admin-cert"}, tc.args...)...)
		if code != 2 || !strings.Contains(errs, tc.want) {
			t.Errorf("ca admin-cert %v: %d %q, want 2 and %q", tc.args, code, errs, tc.want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "ca", "root.pem")); err == nil {
		t.Error("admin-cert created a CA root in an empty state directory")
	}
}

// TestTokenFile: the bearer token is sent, re-read on each call (a
// projected token rotates), and the last one kept when the file cannot be
// read again (a pipe from `kubectl create token`).
func TestTokenFile(t *testing.T) {
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		got = append(got, r.Header.Get("Authorization"))
	}))
	defer srv.Close()
	file := filepath.Join(t.TempDir(), "token")
	os.WriteFile(file, []byte("tok-1\n"), 0o600)
	f := adminClientFlags{tokenFile: file}
	c, base, err := f.client(srv.URL, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	get := func() {
		resp, err := c.Get(base + "/debug/proxies")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	get()
	os.WriteFile(file, []byte("tok-2"), 0o600)
	get()
	os.Remove(file)
	get()
	if want := []string{"Bearer tok-1", "Bearer tok-2", "Bearer tok-2"}; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("Authorization headers %q, want %q", got, want)
	}
	if _, _, err := (&adminClientFlags{tokenFile: file}).client(srv.URL, time.Second); err == nil || !strings.Contains(err.Error(), "--token-file") {
		t.Errorf("a missing token file: %v, want an error naming --token-file", err)
	}
	if _, _, err := (&adminClientFlags{}).client("https://"+srv.Listener.Addr().String(), time.Second); err == nil ||
		!strings.Contains(err.Error(), "--ca-file") {
		t.Errorf("https without a bundle: %v, want an error naming --cert-dir or --ca-file", err)
	}
}
