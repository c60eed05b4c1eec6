package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The injector's init container runs `medmesh bootstrap --output FILE`.
func TestBootstrapOutputFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "envoy.yaml")
	code, out, stderr := runCmd("bootstrap", "--node-id", "emr-0.clinical", "--service", "emr", "--output", path)
	if code != 0 || out != "" {
		t.Fatalf("exit %d, stdout %q, stderr %s", code, out, stderr)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "emr-0.clinical") {
		t.Errorf("bootstrap file lacks the node id:\n%s", b)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("bootstrap file mode %v, want 0600", fi.Mode().Perm())
	}
}
