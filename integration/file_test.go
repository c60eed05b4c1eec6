package integration

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"medmesh/internal/simproxy"
	"medmesh/registry"
)

const catalogV1 = `services:
- name: emr
  kind: emr
  protocol: grpc
  instances:
  - {id: emr-1, address: 10.0.0.1, port: 9101}
  - {id: emr-2, address: 10.0.0.2, port: 9101, health: warning}
`

// TestFileCatalogWithoutConsul: the YAML catalog drives the mesh without
// Consul; a bad edit is refused with the file, service and field named,
// and the last good catalog keeps being served; a fixed edit applies.
func TestFileCatalogWithoutConsul(t *testing.T) {
	path := filepath.Join(t.TempDir(), "catalog.yaml")
	if err := os.WriteFile(path, []byte(catalogV1), 0o600); err != nil {
		t.Fatal(err)
	}
	cp := startControlPlane(t, func(log *slog.Logger) registry.Source {
		return &registry.File{Path: path, Interval: 20 * time.Millisecond, Logger: log}
	})
	p := startSimProxy(t, cp.xdsAddr(), simproxy.Options{NodeID: "emr-1", Cluster: "emr", Validate: validateAll})
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := p.Wait(ctx, fullConfig("emr")); err != nil {
		t.Fatal(err)
	}
	if n := endpointCount(p.State(), "emr"); n != 2 {
		t.Fatalf("emr endpoints = %d, want 2", n)
	}

	bad := strings.Replace(catalogV1, "port: 9101}", "port: 0}", 1) + "- name: labs\n  instances: []\n"
	if err := os.WriteFile(path, []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the bad edit is reported", func() error {
		if !strings.Contains(cp.logs.String(), `service \"emr\": instances[0].port`) {
			return os.ErrNotExist
		}
		return nil
	})
	if n := endpointCount(p.State(), "emr"); n != 2 {
		t.Fatalf("after a bad edit emr endpoints = %d, want the last good 2", n)
	}

	good := catalogV1 + "- name: labs\n  instances:\n  - {id: labs-1, address: 10.0.0.9, port: 9401}\n"
	if err := os.WriteFile(path, []byte(good), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := p.Wait(ctx, fullConfig("emr", "labs")); err != nil {
		t.Fatal(err)
	}
}
