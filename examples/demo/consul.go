package main

import (
	"context"
	"os"
	"strings"
	"syscall"

	"medmesh/internal/consulagent"
)

// consulExecEnv, when set in this binary's environment, makes it a thin
// launcher for Consul instead of the demo: it moves itself into a process
// group of its own, asks the kernel to stop it when the demo dies, and
// execs the Consul binary named by the variable (same PID, so
// consulagent's Stop and Wait still apply).
//
// Why: internal/consulagent starts Consul in the demo's own process group,
// so a terminal's Ctrl-C would reach Consul at the same moment as the demo
// and Consul would be gone before the services deregister from it; and a
// killed demo would leave Consul running. The launcher gives the demo the
// shutdown order (services, control plane, then Consul) without changing
// consulagent, which tests share.
const consulExecEnv = "MEDMESH_DEMO_EXEC_CONSUL"

// runAsConsulLauncher never returns when it applies.
func runAsConsulLauncher() {
	real := os.Getenv(consulExecEnv)
	if real == "" {
		return
	}
	_ = syscall.Setpgid(0, 0)
	// Survives the exec: Consul gets SIGTERM if the demo dies. The demo is
	// the parent here, so the "thread that forked" caveat of Pdeathsig
	// applies as for the other children.
	_, _, _ = syscall.RawSyscall(syscall.SYS_PRCTL, syscall.PR_SET_PDEATHSIG, uintptr(syscall.SIGTERM), 0)
	if os.Getppid() == 1 { // the demo died before prctl took effect
		os.Exit(1)
	}
	env := make([]string, 0, len(os.Environ()))
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, consulExecEnv+"=") {
			env = append(env, kv)
		}
	}
	err := syscall.Exec(real, append([]string{real}, os.Args[1:]...), env)
	os.Stderr.WriteString("demo: cannot exec consul " + real + ": " + err.Error() + "\n")
	os.Exit(1)
}

// startConsul starts a Consul dev agent through consulagent, launched by
// this binary (see consulExecEnv). It returns the agent and the real
// Consul binary.
func startConsul(ctx context.Context, runDir string) (*consulagent.Agent, string, error) {
	real, err := consulagent.FindBinary()
	if err != nil {
		return nil, "", err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, "", err
	}
	// consulagent takes the binary from CONSUL_BIN and the environment
	// from this process; both are put back once Consul has started.
	restore := setenvTemporarily(map[string]string{"CONSUL_BIN": self, consulExecEnv: real})
	defer restore()
	a, err := consulagent.New(runDir, true)
	if err != nil {
		return nil, real, err
	}
	return a, real, a.Start(ctx)
}

func setenvTemporarily(vars map[string]string) (restore func()) {
	old := map[string]*string{}
	for k, v := range vars {
		if prev, ok := os.LookupEnv(k); ok {
			old[k] = &prev
		} else {
			old[k] = nil
		}
		os.Setenv(k, v)
	}
	return func() {
		for k, prev := range old {
			if prev == nil {
				os.Unsetenv(k)
			} else {
				os.Setenv(k, *prev)
			}
		}
	}
}
