package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
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

// ensureBootstrap makes sure grpc-go finds this instance's xDS bootstrap
// through GRPC_XDS_BOOTSTRAP, the way proxyless applications are
// configured in production.
//
// grpc-go reads the variable once, when its internal envconfig package is
// initialised, before main runs; an os.Setenv in main would be silently
// ignored and the first xDS client would fail with "bootstrap not found".
// So when the variable is unset, the program writes the bootstrap (the same
// JSON as `medmesh bootstrap --proxyless`) and re-executes itself with the
// variable set, as a deployment whose init step writes the file would start
// it. On success in that case it does not return.
func ensureBootstrap(o *options) (path string, owned bool, err error) {
	if p := os.Getenv(bootstrapEnv); p != "" {
		b, err := os.ReadFile(p)
		if err != nil {
			return "", false, fmt.Errorf("%s: %w", bootstrapEnv, err)
		}
		return p, os.Getenv(ownedBootstrapEnv) == p, checkNodeID(b, o.id)
	}
	if c := os.Getenv(bootstrapContentEnv); c != "" {
		return bootstrapContentEnv, false, checkNodeID([]byte(c), o.id)
	}
	b, err := bootstrap.Proxyless(bootstrap.Options{XDSAddress: o.xdsAddress, NodeID: o.id, Service: o.service, SVIDDir: o.svidDir})
	if err != nil {
		return "", false, err
	}
	f, err := os.CreateTemp("", "medmesh-bootstrap-"+o.id+"-*.json")
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
	// Pin the port and ID the bootstrap was written for: the last
	// occurrence of a flag wins, and parseFlags rejects positional
	// arguments, so these are parsed.
	args := append(append([]string{}, os.Args...), "--port="+strconv.Itoa(o.port), "--id="+o.id)
	err = syscall.Exec(exe, args, env)
	os.Remove(f.Name())
	return "", false, fmt.Errorf("re-executing with %s set: %w", bootstrapEnv, err)
}

// checkNodeID refuses a bootstrap written for another instance: the
// control plane finds a server's inbound listener by the node ID, so a
// mismatch would leave the server waiting forever.
func checkNodeID(b []byte, id string) error {
	var bs bootstrap.GRPCBootstrap
	if err := json.Unmarshal(b, &bs); err != nil {
		return fmt.Errorf("xDS bootstrap: %w", err)
	}
	if bs.Node.ID != id {
		return fmt.Errorf("xDS bootstrap node.id is %q but --id is %q; they must be the same (the Consul service ID)", bs.Node.ID, id)
	}
	return nil
}
