// Package kubetest starts a real Kubernetes API server (kube-apiserver and
// etcd, built by `make tools` into bin/k8s) with controller-runtime's
// envtest, for medmesh's tests.
package kubetest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/go-logr/logr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
)

// ErrNoBinaries means kube-apiserver and etcd were not found.
var ErrNoBinaries = errors.New("kube-apiserver and etcd not found: run `make tools` or set KUBEBUILDER_ASSETS")

// AssetsDir locates the directory holding kube-apiserver and etcd:
// $KUBEBUILDER_ASSETS, else bin/k8s of the module root.
func AssetsDir() (string, error) {
	ok := func(dir string) bool {
		for _, b := range []string{"kube-apiserver", "etcd"} {
			if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
				return false
			}
		}
		return true
	}
	if d := os.Getenv("KUBEBUILDER_ASSETS"); d != "" && ok(d) {
		return d, nil
	}
	dir, _ := os.Getwd()
	for i := 0; i < 6 && dir != "/"; i++ {
		if d := filepath.Join(dir, "bin", "k8s"); ok(d) {
			return d, nil
		}
		dir = filepath.Dir(dir)
	}
	return "", ErrNoBinaries
}

// Env starts an API server with the CRDs found in crdDirs installed; the
// caller stops it with Stop. Start is the form for tests.
func Env(crdDirs ...string) (*envtest.Environment, *rest.Config, error) {
	dir, err := AssetsDir()
	if err != nil {
		return nil, nil, err
	}
	// envtest logs through controller-runtime's logger; without one set
	// it prints a stack trace warning on every start.
	ctrllog.SetLogger(logr.Discard())
	env := &envtest.Environment{BinaryAssetsDirectory: dir, CRDDirectoryPaths: crdDirs, ErrorIfCRDPathMissing: len(crdDirs) > 0}
	cfg, err := env.Start()
	if err != nil {
		return nil, nil, fmt.Errorf("starting kube-apiserver and etcd from %s: %w", dir, err)
	}
	return env, cfg, nil
}

// Start runs an API server for the test (stopped at cleanup), with the
// CRDs found in crdDirs installed, and returns its config and a clientset.
func Start(t testing.TB, crdDirs ...string) (*rest.Config, kubernetes.Interface) {
	t.Helper()
	env, cfg, err := Env(crdDirs...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("stopping the API server: %v", err)
		}
	})
	kc, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cfg, kc
}
