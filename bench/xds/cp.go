package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/consul/api"

	"medmesh/controlplane"
	"medmesh/internal/consulagent"
	"medmesh/registry"
)

// cpProcess is the control plane running as a child process, so that its
// peak RSS and CPU time are its own and not mixed with the simulated
// proxies'.
type cpProcess struct {
	cmd       *exec.Cmd // nil when the control plane runs in-process
	cancel    context.CancelFunc
	done      chan error
	XDSAddr   string
	AdminAddr string
	LogPath   string
	stopOnce  sync.Once
}

// findMedmesh returns bin/medmesh from the module root, building it into
// dir when it is missing (`make bench` builds it first).
func findMedmesh(ctx context.Context, dir string) (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(root, "bin", "medmesh")
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	bin = filepath.Join(dir, "medmesh")
	fmt.Fprintln(os.Stderr, "bin/medmesh not found; building it (run `make build` to reuse it)")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/medmesh")
	cmd.Dir, cmd.Stdout, cmd.Stderr = root, os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("building medmesh: %w", err)
	}
	return bin, nil
}

func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found above the working directory")
		}
		dir = parent
	}
}

// startControlPlane starts `medmesh controlplane` against Consul on free
// loopback ports, logging to dir/controlplane.log (controlplane-<name>.log
// when named). With mtlsStateDir, mTLS and authorization are on (a CA
// kept there; --dev hands SVIDs to the loopback proxies), as configuration
// scoped by authorization needs; without, plaintext.
func startControlPlane(bin, consulAddr, dir, goMemLimit, name, mtlsStateDir string) (*cpProcess, error) {
	xp, err := consulagent.FreePort()
	if err != nil {
		return nil, err
	}
	ap, err := consulagent.FreePort()
	if err != nil {
		return nil, err
	}
	c := &cpProcess{
		XDSAddr: "127.0.0.1:" + strconv.Itoa(xp), AdminAddr: "127.0.0.1:" + strconv.Itoa(ap),
		LogPath: filepath.Join(dir, "controlplane.log"), done: make(chan error, 1),
	}
	if name != "" {
		c.LogPath = filepath.Join(dir, "controlplane-"+name+".log")
	}
	logf, err := os.Create(c.LogPath)
	if err != nil {
		return nil, err
	}
	// Plaintext, as the in-process mode: this measures the xDS path; the
	// cost of identities is bench/svid's.
	args := []string{"controlplane", "--consul", "http://" + consulAddr, "--xds-listen", c.XDSAddr, "--admin-listen", c.AdminAddr, "--mtls=false"}
	if mtlsStateDir != "" {
		args = append(args[:len(args)-1], "--state-dir", mtlsStateDir, "--dev")
	}
	c.cmd = exec.Command(bin, args...)
	c.cmd.Stdout, c.cmd.Stderr = logf, logf
	if goMemLimit != "" {
		c.cmd.Env = append(os.Environ(), "GOMEMLIMIT="+goMemLimit)
	}
	// If the benchmark dies without cleaning up (SIGKILL, a panic in a
	// goroutine), the kernel still takes the control plane down with it.
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := c.cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("starting %s: %w", bin, err)
	}
	go func() { c.done <- c.cmd.Wait(); logf.Close() }()
	return c, nil
}

// startInProcess runs the control plane inside the benchmark, for
// profiling only: its memory and CPU then include the simulated proxies'.
func startInProcess(consulAddr, dir string) (*cpProcess, error) {
	logf, err := os.Create(filepath.Join(dir, "controlplane.log"))
	if err != nil {
		return nil, err
	}
	cfg := api.DefaultConfig()
	cfg.Address = consulAddr
	client, err := api.NewClient(cfg)
	if err != nil {
		return nil, err
	}
	log := slog.New(slog.NewTextHandler(logf, nil))
	cp, err := controlplane.New(controlplane.Options{
		Logger: log, Source: registry.NewConsul(registry.ConsulOptions{Client: client, Logger: log}),
		XDSListen: "127.0.0.1:0", AdminListen: "127.0.0.1:0",
	})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &cpProcess{cancel: cancel, done: make(chan error, 1), LogPath: logf.Name()}
	go func() { c.done <- cp.Run(ctx); logf.Close() }()
	c.XDSAddr, c.AdminAddr = cp.XDSAddr().String(), cp.AdminAddr().String()
	return c, nil
}

// Pid is the control plane's process ID.
func (c *cpProcess) Pid() int {
	if c.cmd == nil {
		return os.Getpid()
	}
	return c.cmd.Process.Pid
}

// waitReady polls /readyz until it answers 200; it fails at once if the
// process exits.
func (c *cpProcess) waitReady(parent context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(parent, timeout)
	defer cancel()
	url := "http://" + c.AdminAddr + "/readyz"
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case err := <-c.done:
			c.done <- err // keep it for stop
			return fmt.Errorf("control plane exited before it was ready (log: %s): %v", c.LogPath, err)
		case <-ctx.Done():
			if parent.Err() != nil {
				return parent.Err()
			}
			return fmt.Errorf("control plane not ready after %s (log: %s)", timeout, c.LogPath)
		case <-time.After(50 * time.Millisecond): // polling interval
		}
	}
}

// alive reports an error if the process has exited.
func (c *cpProcess) alive() error {
	select {
	case err := <-c.done:
		c.done <- err
		return fmt.Errorf("control plane exited (log: %s): %v", c.LogPath, err)
	default:
		return nil
	}
}

// stop interrupts the control plane and kills it if it does not exit; a
// second call does nothing.
func (c *cpProcess) stop() { c.stopOnce.Do(c.stopNow) }

func (c *cpProcess) stopNow() {
	if c.cmd == nil {
		c.cancel()
		<-c.done
		return
	}
	_ = c.cmd.Process.Signal(os.Interrupt)
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}
