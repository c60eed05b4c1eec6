package consulreg

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"medmesh/internal/testutil"
)

// TestRegistrationLifecycle against a real Consul agent: the instance is
// registered with the pod's address, Envoy's port and medmesh meta; its
// check follows the app and Envoy; an instance removed behind the
// sidecar's back comes back; shutdown deregisters it.
func TestRegistrationLifecycle(t *testing.T) {
	agent := testutil.Consul(t, true)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	client := agent.Client()

	app := testutil.ListeningApp(t)
	var envoyReady atomic.Bool
	envoyReady.Store(true)
	envoy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if !envoyReady.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer envoy.Close()

	o := Options{Client: client, ServiceID: "emr-0.clinical", Service: "emr", Namespace: "clinical",
		Address: "10.1.2.3", Port: 15006, AppPort: app.Addr().(*net.TCPAddr).Port, EnvoyReadyURL: envoy.URL + "/ready",
		Meta: map[string]string{"medmesh-kind": "emr"}, TTL: time.Second, Logger: slog.New(slog.DiscardHandler)}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- Run(runCtx, o) }()

	health := func() (string, *api.AgentService) {
		entries, _, err := client.Health().Service("emr", "", false, nil)
		if err != nil || len(entries) != 1 {
			return "", nil
		}
		return entries[0].Checks.AggregatedStatus(), entries[0].Service
	}
	testutil.Poll(t, 20*time.Second, "the instance to pass", func() bool { st, _ := health(); return st == api.HealthPassing })
	_, svc := health()
	if svc.ID != "emr-0.clinical" || svc.Address != "10.1.2.3" || svc.Port != 15006 {
		t.Errorf("registered %s at %s:%d, want emr-0.clinical at 10.1.2.3:15006", svc.ID, svc.Address, svc.Port)
	}
	for k, v := range map[string]string{"medmesh-app-port": strconv.Itoa(o.AppPort), "medmesh-namespace": "clinical", "medmesh-kind": "emr"} {
		if svc.Meta[k] != v {
			t.Errorf("meta %s = %q, want %q (all: %v)", k, svc.Meta[k], v, svc.Meta)
		}
	}

	envoyReady.Store(false)
	testutil.Poll(t, 20*time.Second, "critical while Envoy is not ready", func() bool { st, _ := health(); return st == api.HealthCritical })
	checks, _, _ := client.Health().Checks("emr", nil)
	if len(checks) == 0 || !strings.Contains(checks[0].Output, "envoy not ready") {
		t.Errorf("check output does not say why: %+v", checks)
	}
	envoyReady.Store(true)
	testutil.Poll(t, 20*time.Second, "passing again", func() bool { st, _ := health(); return st == api.HealthPassing })

	app.Close()
	testutil.Poll(t, 20*time.Second, "critical once the app stops listening", func() bool { st, _ := health(); return st == api.HealthCritical })

	if err := client.Agent().ServiceDeregister("emr-0.clinical"); err != nil {
		t.Fatal(err)
	}
	testutil.Poll(t, 20*time.Second, "re-registration after the instance was removed", func() bool { _, s := health(); return s != nil })

	stop()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if _, s := health(); s != nil {
		t.Error("the instance is still registered after shutdown")
	}
}

func TestOptionsRefusedNamingTheFlag(t *testing.T) {
	err := Run(context.Background(), Options{Client: &api.Client{}, ServiceID: "x", Service: "x", Address: "emr.local", Port: 0, AppPort: 8080})
	if err == nil || !strings.Contains(err.Error(), "--service-address") || !strings.Contains(err.Error(), "--service-port") {
		t.Errorf("err = %v, want both bad flags named", err)
	}
}
