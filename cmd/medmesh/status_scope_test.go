package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"medmesh/api/admin"
)

// --scope SERVICE prints every service with whether the service's proxies
// are sent it and why; the table's SCOPE column counts them.
func TestStatusScope(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/scope", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("service") != "nurse" {
			http.Error(w, "unknown", http.StatusBadRequest)
			return
		}
		json.NewEncoder(w).Encode(admin.ScopeResponse{Service: "nurse", Services: 3,
			Included: []admin.ScopeEntry{{Service: "emr", Reason: "an intention allows it"}},
			Excluded: []admin.ScopeEntry{{Service: "his", Reason: "PHI default-deny: no intention or MeshAccess allows it"}}})
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	var out, errs bytes.Buffer
	if code := runStatus([]string{"--admin", srv.URL, "--scope", "nurse"}, &out, &errs); code != 0 {
		t.Fatalf("exit %d: %s", code, errs.String())
	}
	for _, want := range []string{"scope of nurse: 1 of 3 services", "emr      yes   an intention allows it", "his      no    PHI default-deny"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("--scope output lacks %q:\n%s", want, out.String())
		}
	}
	n := 12
	var b bytes.Buffer
	PrintStatus(&b, &admin.ProxiesResponse{Ready: true, Services: 1000, Proxies: []admin.Proxy{{ID: "nurse-1", Service: "nurse", Kind: "envoy", Scope: &n}}})
	if !strings.Contains(b.String(), "SCOPE") || !strings.Contains(b.String(), "12/1000") {
		t.Errorf("status table lacks the scope column:\n%s", b.String())
	}
}
