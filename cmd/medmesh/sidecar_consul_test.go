package main

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"medmesh/internal/testutil"
	"medmesh/sidecar/consulreg"
)

func TestSidecarRefusesBadRegistration(t *testing.T) {
	code, _, stderr := runCmd("sidecar", "--extproc-listen", testutil.FreeAddr(t), "--health-listen", testutil.FreeAddr(t), "--service", "emr",
		"--register-consul", "http://127.0.0.1:1", "--service-id", "emr-0.clinical", "--service-address", "emr.local", "--service-port", "15006")
	if code != 2 || !strings.Contains(stderr, "--service-address") || !strings.Contains(stderr, "--app-port") {
		t.Errorf("code %d, stderr %q: want 2 naming --service-address and --app-port", code, stderr)
	}
}

// TestSidecarRegistrationFlags: the registration flags become
// consulreg options (sidecar/run registers the instance; its tests run
// Consul); without --register-consul there is no registration.
func TestSidecarRegistrationFlags(t *testing.T) {
	f, err := parseSidecarFlags([]string{"--register-consul", "http://127.0.0.1:8500", "--service-id", "emr-0.clinical",
		"--service-address", "10.1.2.3", "--service-port", "15006", "--app-port", "8080", "--envoy-ready-url", "http://127.0.0.1:15901/ready",
		"--service-meta", "medmesh-kind=emr, medmesh-protocol = grpc", "--check-ttl", "1s"}, &testutil.SyncBuffer{})
	if err != nil {
		t.Fatal(err)
	}
	o, err := f.registerCfg.options("token")
	if err != nil {
		t.Fatal(err)
	}
	if o.Client == nil {
		t.Fatal("no Consul client")
	}
	o.Client = nil
	want := consulreg.Options{ServiceID: "emr-0.clinical", Address: "10.1.2.3", Port: 15006, AppPort: 8080,
		EnvoyReadyURL: "http://127.0.0.1:15901/ready", Meta: map[string]string{"medmesh-kind": "emr", "medmesh-protocol": "grpc"}, TTL: time.Second}
	if !reflect.DeepEqual(o, want) {
		t.Errorf("options:\n got %+v\nwant %+v", o, want)
	}

	f, err = parseSidecarFlags(nil, &testutil.SyncBuffer{})
	if err != nil {
		t.Fatal(err)
	}
	if o, err := f.registerCfg.options("token"); err != nil || o.Client != nil {
		t.Errorf("without --register-consul: client %v, err %v; want no registration", o.Client, err)
	}
	if f.registerCfg.o.TTL != 15*time.Second {
		t.Errorf("--check-ttl defaults to %v, want 15s", f.registerCfg.o.TTL)
	}

	code, _, stderr := runCmd("sidecar", "--extproc-listen", testutil.FreeAddr(t), "--health-listen", testutil.FreeAddr(t), "--service", "emr",
		"--register-consul", "http://127.0.0.1:1", "--service-meta", "medmesh-kind")
	if code != 2 || !strings.Contains(stderr, `--service-meta "medmesh-kind": want key=value`) {
		t.Errorf("bad meta: code %d, stderr %q", code, stderr)
	}
}
