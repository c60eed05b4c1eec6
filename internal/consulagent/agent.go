// Package consulagent starts and stops a real Consul agent on free
// loopback ports, for integration tests, the demo and benchmarks. The
// binary comes from $CONSUL_BIN or bin/consul (built by `make tools`).
package consulagent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"medmesh/internal/toolbin"

	"github.com/hashicorp/consul/api"
)

// ErrNoBinary means no Consul binary was found.
var ErrNoBinary = errors.New("consul binary not found: run `make tools` or set CONSUL_BIN")

// Agent is a running Consul agent.
type Agent struct {
	Bin     string
	DataDir string
	HTTP    int
	ports   [4]int // server, serf lan, serf wan, spare
	cmd     *exec.Cmd
	done    chan error
	LogPath string
	// Dev runs `consul agent -dev` (state in memory). Otherwise the agent
	// is a single-node server with a data dir, so it keeps its catalog
	// across Restart, as a production agent does.
	Dev bool
	// ManagementToken, when set before Start, turns on ACLs with a
	// default-deny policy and makes this the initial management token;
	// Client uses it.
	ManagementToken string
	// Datacenter names the agent's datacenter (a site); Consul's default
	// "dc1" when empty.
	Datacenter string
	// Peering, when set, serves gRPC over TLS with these files, which
	// Consul requires for cluster peering (peering.go).
	Peering *ServerTLS
}

// FindBinary locates the Consul binary.
func FindBinary() (string, error) {
	if p, ok := toolbin.Find("CONSUL_BIN", "consul"); ok {
		return p, nil
	}
	return "", ErrNoBinary
}

// FreePort returns a free loopback TCP port.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// New prepares an agent with fresh ports and a data dir under dir.
func New(dir string, dev bool) (*Agent, error) {
	bin, err := FindBinary()
	if err != nil {
		return nil, err
	}
	a := &Agent{Bin: bin, DataDir: filepath.Join(dir, "consul-data"), Dev: dev, LogPath: filepath.Join(dir, "consul.log")}
	if err := a.pickPorts(); err != nil {
		return nil, err
	}
	return a, nil
}

// pickPorts chooses the agent's ports at once, holding each one's listener
// until all are chosen: released one by one, the same port could come
// back twice (Consul then refuses to start, e.g. "Serf Advertise WAN
// address ... already configured for Serf Advertise LAN").
func (a *Agent) pickPorts() error {
	var held []net.Listener
	defer func() {
		for _, l := range held {
			l.Close()
		}
	}()
	next := func() (int, error) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		held = append(held, l)
		return l.Addr().(*net.TCPAddr).Port, nil
	}
	var err error
	if a.HTTP, err = next(); err != nil {
		return err
	}
	for i := range a.ports {
		if a.ports[i], err = next(); err != nil {
			return err
		}
	}
	return nil
}

// Addr is the agent's HTTP address (host:port).
func (a *Agent) Addr() string { return "127.0.0.1:" + strconv.Itoa(a.HTTP) }

// Client returns an API client for the agent.
func (a *Agent) Client() *api.Client {
	cfg := api.DefaultConfig()
	cfg.Address = a.Addr()
	cfg.Token = a.ManagementToken
	c, _ := api.NewClient(cfg) // only fails on bad TLS config
	return c
}

// Start starts the agent and waits until it has a leader. Free ports are
// found by binding and releasing them, so another process can take one in
// between; when Consul cannot bind, Start retries on fresh ports.
func (a *Agent) Start(ctx context.Context) error {
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		if err = a.start(ctx); err == nil || !errors.Is(err, errPortTaken) {
			return err
		}
		if err = a.pickPorts(); err != nil {
			return err
		}
	}
	return err
}

var errPortTaken = errors.New("consul could not bind a port")

func (a *Agent) start(ctx context.Context) error {
	node, grpcTLS := "medmesh-test", "-1"
	if a.Datacenter != "" {
		node = a.Datacenter
	}
	if a.Peering != nil {
		grpcTLS = strconv.Itoa(a.ports[3])
	}
	args := []string{"agent", "-bind", "127.0.0.1", "-client", "127.0.0.1", "-node", node,
		"-http-port", strconv.Itoa(a.HTTP), "-dns-port", "-1", "-grpc-port", "-1", "-grpc-tls-port", grpcTLS,
		"-server-port", strconv.Itoa(a.ports[0]), "-serf-lan-port", strconv.Itoa(a.ports[1]),
		"-serf-wan-port", strconv.Itoa(a.ports[2]), "-log-level", "warn"}
	if a.Datacenter != "" {
		args = append(args, "-datacenter", a.Datacenter)
	}
	if t := a.Peering; t != nil {
		args = append(args, "-hcl", fmt.Sprintf(`tls { grpc { ca_file = %q cert_file = %q key_file = %q } }`, t.CAFile, t.CertFile, t.KeyFile))
	}
	if a.ManagementToken != "" {
		args = append(args, "-hcl", fmt.Sprintf(`acl { enabled = true default_policy = "deny" tokens { initial_management = %q } }`, a.ManagementToken))
	}
	if a.Dev {
		args = append(args, "-dev")
	} else {
		args = append(args, "-server", "-bootstrap-expect", "1", "-data-dir", a.DataDir)
	}
	logf, err := os.OpenFile(a.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	a.cmd = exec.Command(a.Bin, args...)
	a.cmd.Stdout, a.cmd.Stderr = logf, logf
	// Its own process group: a terminal's Ctrl-C reaches the owner, which
	// stops Consul last. Pdeathsig: a killed owner never leaves it running.
	a.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := a.cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("starting consul: %w", err)
	}
	a.done = make(chan error, 1)
	go func() { a.done <- a.cmd.Wait(); logf.Close() }()
	return a.WaitReady(ctx)
}

// WaitReady polls until the agent reports a leader.
func (a *Agent) WaitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	url := "http://" + a.Addr() + "/v1/status/leader"
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			var b [64]byte
			n, _ := resp.Body.Read(b[:])
			resp.Body.Close()
			if resp.StatusCode == 200 && n > 4 { // a quoted "host:port", not ""
				return nil
			}
		}
		select {
		case err := <-a.done:
			a.cmd = nil
			logTail, _ := os.ReadFile(a.LogPath)
			if len(logTail) > 2000 {
				logTail = logTail[len(logTail)-2000:]
			}
			if strings.Contains(string(logTail), "address already in use") {
				return fmt.Errorf("%w: %s", errPortTaken, logTail)
			}
			return fmt.Errorf("consul exited before it was ready (%v); log %s:\n%s", err, a.LogPath, logTail)
		case <-ctx.Done():
			return fmt.Errorf("consul not ready after 60s (log: %s)", a.LogPath)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Stop stops the agent and waits for it to exit.
func (a *Agent) Stop() error {
	if a.cmd == nil || a.cmd.Process == nil {
		return nil
	}
	// SIGTERM, not SIGINT: a server given SIGINT leaves the cluster
	// gracefully, which is slow and not what a crash or restart does.
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.done:
	case <-time.After(10 * time.Second):
		_ = a.cmd.Process.Kill()
		<-a.done
	}
	a.cmd = nil
	return nil
}

// Restart stops and starts the agent on the same ports and data dir.
func (a *Agent) Restart(ctx context.Context) error {
	if err := a.Stop(); err != nil {
		return err
	}
	return a.Start(ctx)
}
