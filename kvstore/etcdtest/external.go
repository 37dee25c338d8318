package etcdtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/palisade-mesh/palisade/internal/testenv"
	"github.com/palisade-mesh/palisade/kvstore"
	"github.com/palisade-mesh/palisade/kvstore/embedded"
)

// External is an etcd server running as a separate process from the installed `etcd` binary
// (Debian's etcd-server, 3.4), listening on a free 127.0.0.1 port and a unix socket.
type External struct {
	t        testing.TB
	bin      string
	dir      string // data, socket and log live here
	clientTC string // http(s)://127.0.0.1:port
	peer     string
	socket   string // absolute socket path
	tls      *embedded.TLSServerConfig

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

const externalStartTimeout = 20 * time.Second

// StartExternal runs Debian's etcd binary for the test (skipped, or failed in CI, when it is not
// installed) and waits until it answers. It is stopped and its files removed when the test ends.
// Of the ServerOptions only WithServerTLS applies.
func StartExternal(t testing.TB, opts ...ServerOption) *External {
	t.Helper()
	bin := testenv.RequireBinary(t, "etcd", "apt-get install etcd-server")
	var want embedded.Config
	for _, o := range opts {
		o(&want)
	}
	// The socket must have a short path, and etcd 3.4 only takes unix URLs of the form host:port,
	// relative to its working directory, so the whole server lives in a short temp dir.
	dir := SocketDir(t)
	e := &External{t: t, bin: bin, dir: dir, socket: filepath.Join(dir, "etcd:1"), tls: want.TLS}
	var lastErr error
	for range 3 {
		ports, err := freePorts(2)
		if err != nil {
			t.Fatalf("pick free ports for etcd: %v", err)
		}
		e.clientTC = e.scheme("http") + "://127.0.0.1:" + ports[0]
		e.peer = "http://127.0.0.1:" + ports[1]
		if lastErr = e.start(); lastErr == nil {
			t.Cleanup(e.Stop)
			return e
		}
		// Another process may have taken a port between our probe and etcd's bind: try new ones.
	}
	t.Fatalf("start external etcd: %v", lastErr)
	return nil
}

// Endpoints are the TCP endpoint and the unix socket endpoint, stable across restarts.
func (e *External) Endpoints() []string {
	return []string{e.clientTC, e.scheme("unix") + "://" + e.socket}
}

// scheme adds the TLS "s" to base when the server serves TLS.
func (e *External) scheme(base string) string {
	if e.tls != nil {
		return base + "s"
	}
	return base
}

// DataDir is the server's data directory.
func (e *External) DataDir() string { return filepath.Join(e.dir, "data") }

func (e *External) start() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cmd != nil {
		return errors.New("etcd is running")
	}
	logFile, err := os.OpenFile(filepath.Join(e.dir, "etcd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open etcd log: %w", err)
	}
	defer logFile.Close()
	args := []string{
		"--name", "etcdtest",
		"--data-dir", e.DataDir(),
		"--listen-client-urls", e.clientTC + "," + e.scheme("unix") + "://etcd:1",
		"--advertise-client-urls", e.clientTC,
		"--listen-peer-urls", e.peer,
		"--initial-advertise-peer-urls", e.peer,
		"--initial-cluster", "etcdtest=" + e.peer,
		"--logger", "zap", "--log-outputs", "stderr",
	}
	if e.tls != nil {
		args = append(args, "--cert-file", e.tls.CertFile, "--key-file", e.tls.KeyFile)
		if e.tls.TrustedCAFile != "" {
			args = append(args, "--trusted-ca-file", e.tls.TrustedCAFile, "--client-cert-auth")
		}
	}
	cmd := exec.Command(e.bin, args...)
	cmd.Dir = e.dir
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// If the test binary dies, etcd must not outlive it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("run %s: %w", e.bin, err)
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		close(done)
	}()
	e.cmd, e.done = cmd, done
	if err := e.waitReady(done); err != nil {
		e.stopLocked()
		return fmt.Errorf("%w; etcd log:\n%s", err, e.logTail())
	}
	return nil
}

func (e *External) waitReady(exited <-chan struct{}) error {
	deadline := time.Now().Add(externalStartTimeout)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return errors.New("etcd exited during startup")
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		c, err := kvstore.New(ctx, kvstore.Config{Endpoints: e.Endpoints()[:1], DialTimeout: time.Second, TLS: e.probeTLS()})
		cancel()
		if err == nil {
			c.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("etcd not answering on %s after %s", e.clientTC, externalStartTimeout)
}

// probeTLS is the client side of the server's TLS: its own certificate doubles as a client
// certificate signed by the trusted CA.
func (e *External) probeTLS() *kvstore.TLSConfig {
	if e.tls == nil {
		return nil
	}
	return &kvstore.TLSConfig{CAFile: e.tls.TrustedCAFile, CertFile: e.tls.CertFile, KeyFile: e.tls.KeyFile}
}

// Stop terminates the server (SIGTERM, then SIGKILL after 10s). Stopping a stopped server does
// nothing.
func (e *External) Stop() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.stopLocked()
}

func (e *External) stopLocked() {
	if e.cmd == nil {
		return
	}
	e.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-e.done:
	case <-time.After(10 * time.Second):
		e.cmd.Process.Kill()
		<-e.done
	}
	e.cmd, e.done = nil, nil
}

// Restart starts the stopped server again on the same data and addresses.
func (e *External) Restart() {
	e.t.Helper()
	if err := e.start(); err != nil {
		e.t.Fatalf("restart external etcd: %v", err)
	}
}

func (e *External) logTail() string {
	b, err := os.ReadFile(filepath.Join(e.dir, "etcd.log"))
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 15 {
		lines = lines[len(lines)-15:]
	}
	return strings.Join(lines, "\n")
}

// freePorts returns n distinct TCP ports on 127.0.0.1 that are free right now.
func freePorts(n int) (ports []string, err error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		_, port, _ := net.SplitHostPort(l.Addr().String())
		ports = append(ports, port)
	}
	return ports, nil
}
