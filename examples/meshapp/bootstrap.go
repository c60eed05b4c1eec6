package meshapp

import (
	"encoding/json"
	"fmt"
	"os"
	"syscall"

	"medmesh/controlplane/bootstrap"
)

const (
	bootstrapEnv        = "GRPC_XDS_BOOTSTRAP"
	bootstrapContentEnv = "GRPC_XDS_BOOTSTRAP_CONFIG"
	// ownedBootstrapEnv marks a bootstrap file this program wrote for
	// itself, so the re-executed process removes it on exit.
	ownedBootstrapEnv = "MEDMESH_EXAMPLE_OWNED_BOOTSTRAP"
)

// EnsureBootstrap makes sure grpc-go finds this instance's xDS bootstrap
// through GRPC_XDS_BOOTSTRAP, the way proxyless applications are
// configured in production.
//
// grpc-go reads the variable once, when its internal envconfig package is
// initialised, before main runs; an os.Setenv in main would be silently
// ignored and the first xDS client would fail with "bootstrap not found".
// So when the variable is unset, it writes the bootstrap (the same JSON
// as `medmesh bootstrap --proxyless`) and re-executes the program with
// the variable set and pin appended to its arguments (flags that must not
// change in the new process, such as a port chosen at random: the last
// occurrence of a flag wins), as a deployment whose init step writes the
// file would start it. On success in that case it does not return.
//
// It returns the bootstrap's path and whether this process owns the file
// (and removes it when it exits).
func EnsureBootstrap(o bootstrap.Options, pin ...string) (path string, owned bool, err error) {
	if p := os.Getenv(bootstrapEnv); p != "" {
		b, err := os.ReadFile(p)
		if err != nil {
			return "", false, fmt.Errorf("%s: %w", bootstrapEnv, err)
		}
		return p, os.Getenv(ownedBootstrapEnv) == p, CheckNodeID(b, o.NodeID)
	}
	if c := os.Getenv(bootstrapContentEnv); c != "" {
		return bootstrapContentEnv, false, CheckNodeID([]byte(c), o.NodeID)
	}
	b, err := bootstrap.Proxyless(o)
	if err != nil {
		return "", false, err
	}
	f, err := os.CreateTemp("", "medmesh-bootstrap-"+o.NodeID+"-*.json")
	if err != nil {
		return "", false, err
	}
	_, werr := f.Write(b)
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		os.Remove(f.Name())
		return "", false, werr
	}
	exe, err := os.Executable()
	if err != nil {
		os.Remove(f.Name())
		return "", false, err
	}
	env := append(os.Environ(), bootstrapEnv+"="+f.Name(), ownedBootstrapEnv+"="+f.Name())
	args := append(append([]string{}, os.Args...), pin...)
	err = syscall.Exec(exe, args, env)
	os.Remove(f.Name())
	return "", false, fmt.Errorf("re-executing with %s set: %w", bootstrapEnv, err)
}

// CheckNodeID refuses a bootstrap written for another instance: the
// control plane finds a server's inbound listener by the node ID, so a
// mismatch would leave the server waiting forever.
func CheckNodeID(b []byte, id string) error {
	var bs bootstrap.GRPCBootstrap
	if err := json.Unmarshal(b, &bs); err != nil {
		return fmt.Errorf("xDS bootstrap: %w", err)
	}
	if bs.Node.ID != id {
		return fmt.Errorf("xDS bootstrap node.id is %q but --id is %q; they must be the same (the Consul service ID)", bs.Node.ID, id)
	}
	return nil
}
