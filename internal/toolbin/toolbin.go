// Package toolbin finds the third-party programs `make tools` builds into
// bin/ (Consul, Jaeger), for tests, the demo and benchmarks.
package toolbin

import (
	"os"
	"os/exec"
	"path/filepath"
)

// Find returns $env when it names a file, else bin/<name> in the working
// directory or one of its parents (the module root: tests run in their
// package's directory), else <name> on PATH; ok is false when none is.
func Find(env, name string) (path string, ok bool) {
	if b := os.Getenv(env); b != "" {
		if _, err := os.Stat(b); err == nil {
			return b, true
		}
	}
	dir, _ := os.Getwd()
	for i := 0; i < 6 && dir != "/"; i++ {
		p := filepath.Join(dir, "bin", name)
		if _, err := os.Stat(p); err == nil {
			return p, true
		}
		dir = filepath.Dir(dir)
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, true
	}
	return "", false
}
