package integration

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"medmesh/controlplane/bootstrap"
)

// Node's grpc-js and grpc-js-xds are installed by `make tools-node` from
// interop/node/package-lock.json into .cache/npm (outside the Go module's
// packages); the interop scripts are interop/node/*.js.

// nodeEnv finds node and the installed packages. Missing, the test fails
// with the way out: the interop suite must not pass by running nothing.
// Only -short skips it.
func nodeEnv(t *testing.T) (node, modules, scripts string) {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: the grpc-js interop suite needs node and the npm packages")
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	node, err = exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is not installed: the grpc-js interop tests need Node.js 20 and npm (apt-get install nodejs npm), then `make tools-node`")
	}
	modules = os.Getenv("MEDMESH_NODE_MODULES")
	if modules == "" {
		modules = filepath.Join(root, ".cache", "npm", "node_modules")
	}
	if _, err := os.Stat(filepath.Join(modules, "@grpc", "grpc-js-xds", "package.json")); err != nil {
		t.Fatalf("@grpc/grpc-js-xds is not installed in %s: run `make tools-node` (or set MEDMESH_NODE_MODULES)", modules)
	}
	return node, modules, filepath.Join(root, "interop", "node")
}

// nodeProc is a Node script speaking JSON lines: commands on stdin,
// answers and events on stdout. A crash (an uncaught exception, which
// the scripts report before exiting) or an exit is an error naming the
// script and its reason on every later read.
type nodeProc struct {
	name   string
	stdin  io.WriteCloser
	lines  chan map[string]any // buffered: the scripts print a line per command or event
	stderr *syncBuffer
	done   chan struct{} // closed when stdout ends
	mu     sync.Mutex
	crash  string
	cmd    *exec.Cmd
}

// startNode runs interop/node/<script> with a bootstrap written by
// medmesh's own bootstrap package, as GRPC_XDS_BOOTSTRAP, and env added
// to the environment.
func startNode(t *testing.T, name, script string, o bootstrap.Options, env []string, args ...string) *nodeProc {
	t.Helper()
	node, modules, scripts := nodeEnv(t)
	bs, err := bootstrap.Proxyless(o)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), name+"-bootstrap.json")
	if err := os.WriteFile(file, bs, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(node, append([]string{filepath.Join(scripts, script)}, args...)...)
	cmd.Env = append(append(os.Environ(), "GRPC_XDS_BOOTSTRAP="+file, "NODE_PATH="+modules), env...)
	p := &nodeProc{name: name, lines: make(chan map[string]any, 1024), stderr: &syncBuffer{}, done: make(chan struct{}), cmd: cmd}
	cmd.Stderr = p.stderr
	if p.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	go p.read(out)
	t.Cleanup(func() {
		p.stdin.Close() // the scripts exit when stdin closes
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
		}
		cmd.Wait()
		if t.Failed() {
			var unread []string
			for len(p.lines) > 0 {
				unread = append(unread, fmt.Sprint(<-p.lines))
			}
			t.Logf("%s stderr:\n%s\nunread output: %s", name, tail(p.stderr.String(), 4000), strings.Join(unread, "\n"))
		}
	})
	return p
}

func (p *nodeProc) read(out io.Reader) {
	defer close(p.done)
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			continue // not ours (a library printing to stdout)
		}
		if m["event"] == "crash" {
			p.mu.Lock()
			p.crash, _ = m["error"].(string)
			p.mu.Unlock()
		}
		p.lines <- m
	}
}

// dead says why the process is gone, or nil while it runs.
func (p *nodeProc) dead() error {
	select {
	case <-p.done:
	default:
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.crash != "" {
		return fmt.Errorf("%s crashed: %s", p.name, p.crash)
	}
	return fmt.Errorf("%s exited; stderr: %s", p.name, tail(p.stderr.String(), 2000))
}

// send writes one command.
func (p *nodeProc) send(v any) error {
	if err := p.dead(); err != nil {
		return err
	}
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = p.stdin.Write(append(b, '\n'))
	return err
}

// next returns the next line for which match is true, skipping others.
func (p *nodeProc) next(within time.Duration, match func(map[string]any) bool) (map[string]any, error) {
	timeout := time.After(within)
	for {
		select {
		case m := <-p.lines:
			if m["event"] == "crash" {
				return nil, fmt.Errorf("%s crashed: %s", p.name, m["error"])
			}
			if match(m) {
				return m, nil
			}
		case <-p.done:
			// Lines read before the end are still buffered.
			select {
			case m := <-p.lines:
				if m["event"] != "crash" && match(m) {
					return m, nil
				}
				continue
			default:
			}
			return nil, p.dead()
		case <-timeout:
			return nil, fmt.Errorf("%s: no answer within %s", p.name, within)
		}
	}
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}

// counts decodes a {"name": number} object.
func counts(v any) map[string]int {
	out := map[string]int{}
	m, _ := v.(map[string]any)
	for k, n := range m {
		if f, ok := n.(float64); ok {
			out[k] = int(f)
		}
	}
	return out
}

// jsError summarises a script's error counts for a failure message.
func jsErrors(errs map[string]int) error {
	if len(errs) == 0 {
		return nil
	}
	var parts []string
	for msg, n := range errs {
		parts = append(parts, fmt.Sprintf("%d× %s", n, msg))
	}
	return errors.New(strings.Join(parts, "; "))
}
