package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"medmesh/api/admin"
)

// fakeAdmin answers /debug/proxies with one proxy, counting the reads.
func fakeAdmin(t *testing.T) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var reads atomic.Int32
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/proxies", func(w http.ResponseWriter, _ *http.Request) {
		reads.Add(1)
		json.NewEncoder(w).Encode(admin.ProxiesResponse{Ready: true, Serving: "consul", MTLS: true,
			Proxies: []admin.Proxy{{ID: "emr-1", Service: "emr", Kind: "proxyless", Transport: "sotw"}}})
	})
	mux.HandleFunc("/debug/policies", func(w http.ResponseWriter, _ *http.Request) {
		json.NewEncoder(w).Encode(admin.PoliciesResponse{Resolved: true})
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv, &reads
}

func TestStatusOutputJSON(t *testing.T) {
	srv, _ := fakeAdmin(t)
	var out, errs bytes.Buffer
	if code := runStatus([]string{"--admin", srv.URL, "-o", "json"}, &out, &errs); code != 0 {
		t.Fatalf("exit %d: %s", code, errs.String())
	}
	var pr admin.ProxiesResponse
	if err := json.Unmarshal(out.Bytes(), &pr); err != nil || len(pr.Proxies) != 1 || pr.Proxies[0].ID != "emr-1" {
		t.Fatalf("-o json printed %q (%v); want the /debug/proxies JSON", out.String(), err)
	}
	if code := runStatus([]string{"--admin", srv.URL, "-o", "yaml"}, &out, &errs); code != 2 || !strings.Contains(errs.String(), `-o "yaml"`) {
		t.Errorf("-o yaml: exit %d, %q; want 2 naming the value", code, errs.String())
	}
}

// --watch prints the table again every interval; --count stops it.
func TestStatusWatch(t *testing.T) {
	srv, reads := fakeAdmin(t)
	var out, errs bytes.Buffer
	if code := runStatus([]string{"--admin", srv.URL, "--watch", "--interval", "1ms", "--count", "3"}, &out, &errs); code != 0 {
		t.Fatalf("exit %d: %s", code, errs.String())
	}
	if n := strings.Count(out.String(), "Every 1ms: medmesh status --admin "+srv.URL); n != 3 || reads.Load() != 3 {
		t.Errorf("%d headers, %d reads; want 3 of each:\n%s", n, reads.Load(), out.String())
	}
	if strings.Count(out.String(), "emr-1") != 3 || strings.Contains(out.String(), "\033[2J") {
		t.Errorf("want the table 3 times and no terminal codes in a buffer:\n%s", out.String())
	}
	// A control plane that is down is reported, and the watch goes on.
	srv.Close()
	out.Reset()
	errs.Reset()
	if code := runStatus([]string{"--admin", srv.URL, "--watch", "--interval", "1ms", "--count", "2"}, &out, &errs); code != 0 ||
		strings.Count(errs.String(), "cannot reach the control plane") != 2 {
		t.Errorf("watching a control plane that is down: exit %d, stderr %q; want two reports and exit 0", code, errs.String())
	}
}
