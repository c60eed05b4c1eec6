package run_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"medmesh/internal/testutil"
	"medmesh/sidecar/consulreg"
	"medmesh/sidecar/run"
)

// TestStartRegistersInConsul runs the sidecar with the registration as
// the injector configures it, against a real Consul: the pod appears
// passing, and leaves the catalog before Start's channel yields.
func TestStartRegistersInConsul(t *testing.T) {
	agent := testutil.Consul(t, true)
	app := testutil.ListeningApp(t)
	var stderr testutil.SyncBuffer
	o := options(&stderr)
	o.SVID.Service, o.Namespace = "emr", "clinical"
	o.ExtProc.Listen, o.ExtProc.HealthListen = testutil.FreeAddr(t), testutil.FreeAddr(t)
	client := agent.Client()
	o.Register = consulreg.Options{Client: client, ServiceID: "emr-0.clinical", Address: "10.1.2.3", Port: 15006,
		AppPort: app.Addr().(*net.TCPAddr).Port, Meta: map[string]string{"medmesh-kind": "emr"}, TTL: time.Second}
	sctx, stop := context.WithCancel(context.Background())
	defer stop()
	done, err := run.Start(sctx, o)
	if err != nil {
		t.Fatal(err)
	}
	status := func() string {
		entries, _, err := client.Health().Service("emr", "", false, nil)
		if err != nil || len(entries) != 1 {
			return ""
		}
		if entries[0].Service.Meta["medmesh-kind"] != "emr" || entries[0].Service.Meta["medmesh-namespace"] != "clinical" {
			t.Errorf("meta = %v", entries[0].Service.Meta)
		}
		return entries[0].Checks.AggregatedStatus()
	}
	testutil.Poll(t, 15*time.Second, "the instance to pass in Consul", func() bool { return status() == api.HealthPassing })
	stop() // as the command's SIGTERM does
	if err := <-done; err != nil {
		t.Fatalf("terminal error %v: %s", err, stderr.String())
	}
	// Deregistration happens before the channel yields: no polling.
	if st := status(); st != "" {
		t.Errorf("after shutdown the instance is still in Consul (%s)", st)
	}
}

// TestStartRefusesBadRegistration: a registration that does not validate
// stops the start, naming every bad flag.
func TestStartRefusesBadRegistration(t *testing.T) {
	client, err := api.NewClient(&api.Config{Address: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	var logs testutil.SyncBuffer
	o := options(&logs)
	o.SVID.Service = "emr"
	o.ExtProc.Listen, o.ExtProc.HealthListen = testutil.FreeAddr(t), testutil.FreeAddr(t)
	o.Register = consulreg.Options{Client: client, ServiceID: "emr-0.clinical", Address: "emr.local", Port: 15006, TTL: 15 * time.Second}
	_, err = run.Start(context.Background(), o)
	if err == nil || !strings.Contains(err.Error(), "--service-address") || !strings.Contains(err.Error(), "--app-port") {
		t.Errorf("err %v: want --service-address and --app-port named", err)
	}
}
