package main

import (
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

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"medmesh/internal/consulagent"
)

// sidecarProcess runs the real `medmesh sidecar` as its own process, as it
// runs beside Envoy, and returns a client of its ext_proc server: the
// overhead is then measured without this process's load generator
// competing with the extension for the Go scheduler.
//
// With audit, every PHI request is also written to an audit trail
// (fsync once a second, --audit-durability batch) in a temporary file.
//
// With unix, the ext_proc server listens on a unix socket (as Envoy and
// the sidecar can share one in a pod) instead of loopback TCP.
//
// With medmesh "" it runs the do-nothing server instead, answering with
// the sidecar's answer if answer is set (see echoProcessor): this
// program again, or floor if set (a build of it linked like medmesh).
func sidecarProcess(medmesh, floor string, audit, unix, answer bool) (extprocv3.ExternalProcessorClient, func(), int) {
	health, err := consulagent.FreePort()
	if err != nil {
		fail(err)
	}
	dir, err := os.MkdirTemp("", "medmesh-extproc-bench-")
	if err != nil {
		fail(err)
	}
	var addr string
	if unix {
		addr = "unix://" + filepath.Join(dir, "extproc.sock")
	} else {
		port, err := consulagent.FreePort()
		if err != nil {
			fail(err)
		}
		addr = "127.0.0.1:" + strconv.Itoa(port)
	}
	if medmesh == "" {
		// The do-nothing server in its own process.
		self, err := os.Executable()
		if err != nil {
			fail(err)
		}
		if floor != "" {
			self = floor
		}
		args := []string{"-serve-echo", addr, "-serve-health", "127.0.0.1:" + strconv.Itoa(health)}
		if answer {
			args = append(args, "-serve-answer")
		}
		return startProcess(self, args, addr, health, dir)
	}
	args := []string{"sidecar", "--extproc-listen", addr, "--health-listen", "127.0.0.1:" + strconv.Itoa(health), "--log-format", "json"}
	if audit {
		key := filepath.Join(dir, "audit.key")
		if err := os.WriteFile(key, []byte("bench-audit-key-0123456789abcdef"), 0o600); err != nil {
			fail(err)
		}
		args = append(args, "--audit-log", filepath.Join(dir, "audit.jsonl"), "--audit-key-file", key, "--audit-durability", "batch")
	}
	return startProcess(medmesh, args, addr, health, dir)
}

// startProcess runs an ext_proc server process and waits for its health
// endpoint; dir (if any) is removed when it stops.
func startProcess(bin string, args []string, addr string, health int, dir string) (extprocv3.ExternalProcessorClient, func(), int) {
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "medmesh-extproc-bench-"); err != nil {
			fail(err)
		}
	}
	if pinServer != "" {
		args = append([]string{"-c", pinServer, bin}, args...)
		bin = "taskset"
	}
	cmd := exec.Command(bin, args...)
	// Its log (start-up lines only) goes to a file, not into the figures.
	logf, err := os.Create(filepath.Join(dir, "sidecar.log"))
	if err != nil {
		fail(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		fail(fmt.Errorf("starting %s: %w (run make build)", bin, err))
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(health) + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			fail(fmt.Errorf("%s not ready: %v", bin, err))
		}
		time.Sleep(20 * time.Millisecond)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fail(err)
	}
	return extprocv3.NewExternalProcessorClient(conn), func() {
		conn.Close()
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		logf.Close()
		os.RemoveAll(dir)
	}, cmd.Process.Pid
}

// serveEcho runs the do-nothing ext_proc server and a /readyz endpoint
// until killed (the -serve-echo mode of this program).
func serveEcho(addr, health string, answer *extprocv3.ProcessingResponse) {
	network := "tcp"
	if path, ok := strings.CutPrefix(addr, "unix://"); ok {
		network, addr = "unix", path
	}
	lis, err := net.Listen(network, addr)
	if err != nil {
		fail(err)
	}
	g := newEchoServer(answer)
	go http.ListenAndServe(health, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	g.Serve(lis)
}

// The CPUs the load generator and the servers run on (-pin-client,
// -pin-server): on a small machine the p99 of every variant, the floor
// included, is set by the scheduler when the load generator and the
// server share cores; pinned apart, each process has its own core, as
// Envoy and the sidecar would on a node with cores to spare.
var pinClient, pinServer string

// pinSelf runs this program again under taskset with -pin-client, so that
// every thread of it (and GOMAXPROCS) follows the CPU list.
func pinSelf() {
	if pinClient == "" || os.Getenv("MEDMESH_BENCH_PINNED") != "" {
		return
	}
	taskset, err := exec.LookPath("taskset")
	if err != nil {
		fail(fmt.Errorf("-pin-client needs taskset: %w", err))
	}
	self, err := os.Executable()
	if err != nil {
		fail(err)
	}
	env := append(os.Environ(), "MEDMESH_BENCH_PINNED=1")
	fail(syscall.Exec(taskset, append([]string{"taskset", "-c", pinClient, self}, os.Args[1:]...), env))
}
