package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"medmesh/internal/consulagent"
)

func TestSidecarRefusesBadRegistration(t *testing.T) {
	code, _, stderr := runCmd("sidecar", "--extproc-listen", freePort(t), "--health-listen", freePort(t), "--service", "emr",
		"--register-consul", "http://127.0.0.1:1", "--service-id", "emr-0.clinical", "--service-address", "emr.local", "--service-port", "15006")
	if code != 2 || !strings.Contains(stderr, "--service-address") || !strings.Contains(stderr, "--app-port") {
		t.Errorf("code %d, stderr %q: want 2 naming --service-address and --app-port", code, stderr)
	}
}

// TestSidecarRegistersInConsul runs `medmesh sidecar --register-consul`
// as the injector configures it, against a real Consul: the pod appears
// passing, and leaves the catalog when the sidecar is stopped.
func TestSidecarRegistersInConsul(t *testing.T) {
	agent, err := consulagent.New(t.TempDir(), true)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := agent.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { agent.Stop() })
	app, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	go func() {
		for {
			c, err := app.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	var stderr syncBuf
	done := make(chan int, 1)
	go func() {
		done <- run([]string{"sidecar", "--extproc-listen", freePort(t), "--health-listen", freePort(t), "--service", "emr",
			"--namespace", "clinical", "--register-consul", "http://" + agent.Addr(), "--service-id", "emr-0.clinical",
			"--service-address", "10.1.2.3", "--service-port", "15006", "--app-port", strconv.Itoa(app.Addr().(*net.TCPAddr).Port),
			"--service-meta", "medmesh-kind=emr", "--check-ttl", "1s"}, &bytes.Buffer{}, &stderr)
	}()
	client := agent.Client()
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
	poll(t, "the instance to pass in Consul", func() bool { return status() == api.HealthPassing })
	syscall.Kill(os.Getpid(), syscall.SIGTERM) // caught by the command's NotifyContext
	if code := <-done; code != 0 {
		t.Fatalf("exit code %d: %s", code, stderr.String())
	}
	// Deregistration happens before the command returns: no polling.
	if st := status(); st != "" {
		t.Errorf("after shutdown the instance is still in Consul (%s)", st)
	}
}
