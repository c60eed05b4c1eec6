package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// proc is one child process of the demo (the control plane or a service
// instance). Each runs in its own process group, so the demo decides the
// shutdown order (services before the control plane before Consul) instead
// of a terminal's Ctrl-C hitting everything at once, and so stopping one
// also stops anything it started.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed once the process has exited and its output is read
	err  error         // exit error, valid after done
	// stopping is set before the demo stops the process on purpose, so
	// only other exits are reported as unexpected.
	stopping atomic.Bool
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// supervisor starts and stops the demo's children and routes their output.
type supervisor struct {
	logDir string
	env    []string
	// onLine sees every line a child writes (after it is logged to the
	// child's file); it runs on that child's reader goroutine.
	onLine func(p *proc, line []byte)
	// onExit is called once per child that exits without being stopped.
	onExit func(p *proc)

	mu  sync.Mutex
	all []*proc // every process ever started, for the final check
}

// start runs bin with args; its stdout and stderr go, line by line, to
// <logDir>/<name>.log and to onLine.
func (s *supervisor) start(name, bin string, args ...string) (*proc, error) {
	return s.startSpec(procSpec{name: name, bin: bin, args: args})
}

// procSpec describes a child beyond its command line.
type procSpec struct {
	name, bin string
	args      []string
	// env is added to the supervisor's environment: secrets such as a
	// join token go here, not on the command line every local user can
	// read in ps.
	env []string
	// oneShot marks a process that exits by itself when done; its exit
	// is not reported as unexpected.
	oneShot bool
}

func (s *supervisor) startSpec(spec procSpec) (*proc, error) {
	name, bin, args := spec.name, spec.bin, spec.args
	logf, err := os.OpenFile(filepath.Join(s.logDir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	// One os.Pipe rather than cmd.StdoutPipe: Wait would close that pipe
	// before the last lines are read.
	pr, pw, err := os.Pipe()
	if err != nil {
		logf.Close()
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(append([]string{}, s.env...), spec.env...)
	cmd.Stdout, cmd.Stderr = pw, pw
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid: true,
		// If the demo itself is killed (SIGKILL, crash), the kernel tells
		// the child to stop, so nothing keeps running unattended.
		Pdeathsig: syscall.SIGTERM,
	}
	if err := cmd.Start(); err != nil {
		pr.Close()
		pw.Close()
		logf.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	pw.Close() // the child holds its own copy
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	p.stopping.Store(spec.oneShot) // before it can exit
	s.mu.Lock()
	s.all = append(s.all, p)
	s.mu.Unlock()

	read := make(chan struct{})
	go func() {
		defer close(read)
		defer pr.Close()
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64*1024), 1024*1024)
		for sc.Scan() {
			line := sc.Bytes()
			logf.Write(line)
			logf.Write([]byte{'\n'})
			if s.onLine != nil {
				s.onLine(p, line)
			}
		}
	}()
	go func() {
		p.err = cmd.Wait()
		<-read
		logf.Close()
		close(p.done)
		if !p.stopping.Load() && s.onExit != nil {
			s.onExit(p)
		}
	}()
	return p, nil
}

// stop asks the process group to stop (SIGTERM: services deregister and
// drain first) and kills it if it has not exited within grace.
func (s *supervisor) stop(p *proc, grace time.Duration) error {
	p.stopping.Store(true)
	if p.exited() {
		return nil
	}
	pgid := p.pid() // Setpgid: the group ID is the child's PID
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.done
		return fmt.Errorf("%s did not stop within %s; killed", p.name, grace)
	}
	// Anything the child started in its group goes with it.
	if err := syscall.Kill(-pgid, 0); err == nil {
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
	}
	return nil
}

// kill kills the process group at once (SIGKILL): a crash, not a stop.
func (s *supervisor) kill(p *proc) {
	p.stopping.Store(true)
	_ = syscall.Kill(-p.pid(), syscall.SIGKILL)
	<-p.done
}

// signal sends sig to one process (not its group): used to flip a
// service's health check.
func (s *supervisor) signal(p *proc, sig syscall.Signal) error {
	if p.exited() {
		return fmt.Errorf("%s is not running", p.name)
	}
	return p.cmd.Process.Signal(sig)
}

// killAll is the second Ctrl-C: no more waiting.
func (s *supervisor) killAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.all {
		p.stopping.Store(true)
		_ = syscall.Kill(-p.pid(), syscall.SIGKILL)
	}
}

// leftovers lists the process groups of this demo that still have a live
// process; empty after a clean stop.
func (s *supervisor) leftovers() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, p := range s.all {
		if err := syscall.Kill(-p.pid(), 0); !errors.Is(err, syscall.ESRCH) {
			out = append(out, fmt.Sprintf("%s (pid %d)", p.name, p.pid()))
		}
	}
	return out
}

// started returns how many processes the demo has started in total.
func (s *supervisor) started() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.all)
}
