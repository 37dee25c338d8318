package etcdtest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/palisade-mesh/palisade/kvstore/embedded"
)

// ServerOption adjusts the embedded server configuration of Start and StartRestartable.
type ServerOption func(*embedded.Config)

// WithServerTLS serves clients over TLS only (https:// and unixs://), with the server certificate
// of files; the server requires client certificates signed by files.CAFile.
func WithServerTLS(files *TLSFiles) ServerOption {
	return func(c *embedded.Config) {
		c.TLS = &embedded.TLSServerConfig{CertFile: files.ServerCert, KeyFile: files.ServerKey, TrustedCAFile: files.CAFile}
		for i, u := range c.ClientURLs {
			switch {
			case len(u) > 7 && u[:7] == "http://":
				c.ClientURLs[i] = "https://" + u[7:]
			case len(u) > 7 && u[:7] == "unix://":
				c.ClientURLs[i] = "unixs://" + u[7:]
			}
		}
	}
}

// WithAutoCompaction sets the periodic auto-compaction retention (default: off in tests, so that
// tests compact explicitly).
func WithAutoCompaction(d time.Duration) ServerOption {
	return func(c *embedded.Config) { c.AutoCompactionRetention = d }
}

// serverConfig is the test default: data in t.TempDir(), a free TCP port and a unix socket, no
// fsync (tests do not survive machine crashes), no auto-compaction.
func serverConfig(t testing.TB, opts []ServerOption) embedded.Config {
	t.Helper()
	cfg := embedded.Config{
		Name:                    "etcdtest",
		DataDir:                 filepath.Join(t.TempDir(), "etcd"),
		ClientURLs:              []string{"http://127.0.0.1:0", "unix://" + filepath.Join(SocketDir(t), "etcd.sock")},
		UnsafeNoFsync:           true,
		AutoCompactionRetention: -1,
		StartTimeout:            30 * time.Second,
	}
	for _, o := range opts {
		o(&cfg)
	}
	return cfg
}

// SocketDir returns a fresh directory with a short path, fit for unix sockets (whose path is
// limited to 107 bytes, which t.TempDir() can exceed), removed when the test ends.
func SocketDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "pal-etcd-")
	if err != nil {
		t.Fatalf("create socket dir: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// Start runs an embedded etcd for the test: data in t.TempDir(), listening on a free 127.0.0.1 port
// (Endpoints()[0]) and a unix socket (Endpoints()[1]). It is stopped when the test ends.
func Start(t testing.TB, opts ...ServerOption) *embedded.Server {
	t.Helper()
	srv := startEmbedded(t, serverConfig(t, opts))
	t.Cleanup(func() { srv.Close() })
	return srv
}

func startEmbedded(t testing.TB, cfg embedded.Config) *embedded.Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cfg.StartTimeout)
	defer cancel()
	srv, err := embedded.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("start embedded etcd: %v", err)
	}
	return srv
}

// Embedded is an embedded etcd that a test can stop and bring back on the same data and addresses,
// to see what clients do while their server is away.
type Embedded struct {
	t   testing.TB
	mu  sync.Mutex
	cfg embedded.Config
	srv *embedded.Server // nil while stopped
}

// StartRestartable is Start, returning a handle with Stop and Restart. Its TCP ports lie below
// the kernel's ephemeral port range: while it is stopped, a server or client of another test
// process asking for any free port (":0") can never take them, so Restart gets them back and its
// clients never reach another test's etcd meanwhile.
func StartRestartable(t testing.TB, opts ...ServerOption) *Embedded {
	t.Helper()
	cfg := serverConfig(t, opts)
	for i, u := range cfg.ClientURLs {
		if strings.HasPrefix(u, "http://127.0.0.1:0") {
			cfg.ClientURLs[i] = "http://" + reservedPort(t)
		}
	}
	if cfg.PeerURL == "" {
		cfg.PeerURL = "http://" + reservedPort(t)
	}
	srv := startEmbedded(t, cfg)
	e := &Embedded{t: t, cfg: srv.Config(), srv: srv}
	t.Cleanup(e.Stop)
	return e
}

// Endpoints are the server's client URLs; they stay the same across restarts.
func (e *Embedded) Endpoints() []string { return append([]string(nil), e.cfg.ClientURLs...) }

// Stop stops the server; clients see their connection drop. Stopping a stopped server does nothing.
func (e *Embedded) Stop() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.srv != nil {
		e.srv.Close()
		e.srv = nil
	}
}

// Restart starts the stopped server again on the same data directory and addresses.
func (e *Embedded) Restart() {
	e.t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.srv != nil {
		e.t.Fatalf("restart embedded etcd: it is running")
	}
	e.srv = startEmbedded(e.t, e.cfg)
}

// reservedPort returns a free 127.0.0.1 port from 20000-32767, below Linux's default ephemeral
// range (32768-60999), so that no ":0" listener or outgoing connection is ever given it.
func reservedPort(t testing.TB) string {
	t.Helper()
	for range 200 {
		addr := fmt.Sprintf("127.0.0.1:%d", 20000+rand.IntN(12768))
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		ln.Close()
		return addr
	}
	t.Fatal("no free port in 20000-32767")
	return ""
}
