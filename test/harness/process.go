package harness

import (
	"context"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/palisade-mesh/palisade/test/topology"
)

// Process is a palisade daemon (agent, mesh API server) running in a namespace of a test
// topology. It can be stopped with any signal and started again with the same arguments.
type Process struct {
	t     testing.TB
	ns    *topology.Namespace
	name  string
	args  []string
	ready func() error
	log   *LogBuffer

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// NewProcess prepares `palisade args...` in ns; ready reports whether a started process serves
// (nil: started is ready). Its output is printed when the test fails; it is stopped with SIGTERM
// when the test ends.
func NewProcess(t testing.TB, ns *topology.Namespace, name string, args []string, ready func() error) *Process {
	p := &Process{t: t, ns: ns, name: name, args: args, ready: ready, log: &LogBuffer{}}
	t.Cleanup(func() {
		p.Stop(syscall.SIGTERM)
		if t.Failed() {
			t.Logf("%s log:\n%s", name, p.log.String())
		}
	})
	return p
}

// Log returns what the process printed so far.
func (p *Process) Log() string { return p.log.String() }

// Start runs the process and waits until it is ready (at most 60 seconds).
func (p *Process) Start() {
	p.t.Helper()
	cmd := p.ns.Command(context.Background(), Binary(p.t), p.args...)
	cmd.Stdout, cmd.Stderr = p.log, p.log
	if err := p.ns.Start(cmd); err != nil {
		p.t.Fatalf("start %s: %v", p.name, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	p.mu.Lock()
	p.cmd, p.done = cmd, done
	p.mu.Unlock()
	if p.ready == nil {
		return
	}
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if p.ready() == nil {
			return
		}
		select {
		case <-done:
			p.t.Fatalf("%s exited:\n%s", p.name, p.log.String())
		case <-time.After(200 * time.Millisecond):
		}
	}
	p.t.Fatalf("%s not ready after 60s:\n%s", p.name, p.log.String())
}

// Stop signals the process and waits for it to exit, killing it after 15 seconds.
func (p *Process) Stop(sig syscall.Signal) {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

// PID is the process's ID, 0 when it is not running.
func (p *Process) PID() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}
