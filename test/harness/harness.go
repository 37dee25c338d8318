// Package harness runs palisade agents as real processes in the node namespaces of a test
// topology, for end-to-end tests and benchmarks.
package harness

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/palisade-mesh/palisade/internal/demo"
	"github.com/palisade-mesh/palisade/test/topology"
)

// Binary compiles the palisade binary once per test binary run.
var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "palisade-e2e-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "palisade")
		out, err := exec.Command("go", "build", "-o", binPath, "github.com/palisade-mesh/palisade/cmd/palisade").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// Cleanup removes the binary Binary built; call it from TestMain after m.Run.
func Cleanup() {
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
}

// Agent is one `palisade agent` running in a node namespace.
type Agent struct {
	*Process
	node   *topology.Node
	Socket string
	PinDir string // bpffs directory of the agent's pins
}

// LogBuffer collects a process's output; it is safe for concurrent writes and reads.
type LogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// StartAgent starts `palisade agent` on node with the test defaults and any extra flags, and
// waits until it answers `palisade status`.
func StartAgent(t testing.TB, node *topology.Node, cluster string, clusterID int, kvEndpoint, dir string, extra ...string) *Agent {
	t.Helper()
	a := &Agent{
		node:   node,
		Socket: filepath.Join(dir, node.Name+".sock"),
		PinDir: fmt.Sprintf("/sys/fs/bpf/pal-e2e-%d-%s", os.Getpid(), node.Name),
	}
	args := []string{"agent",
		"--cluster-name", cluster, "--cluster-id", fmt.Sprint(clusterID),
		"--node-name", node.Name, "--node-ip", node.FabricIP.String(), "--pod-cidr", node.PodCIDR.String(),
		"--kvstore-endpoints", kvEndpoint, "--lease-ttl", "10s",
		"--state-dir", filepath.Join(dir, node.Name+"-state"), "--socket", a.Socket, "--bpf-pin-dir", a.PinDir,
		"--log-level", "debug", "--metrics-addr", "127.0.0.1:9962",
	}
	a.Process = NewProcess(t, node.NS, "agent on "+node.Name, append(args, extra...), func() error {
		_, err := a.CLI("status")
		return err
	})
	t.Cleanup(func() {
		a.Stop(syscall.SIGTERM)
		// The datapath outlives the agent by design; the test removes it.
		if err := os.RemoveAll(a.PinDir); err != nil {
			t.Errorf("remove pins %s: %v", a.PinDir, err)
		}
	})
	a.Start()
	return a
}

// Node is the node the agent runs on.
func (a *Agent) Node() *topology.Node { return a.node }

// CLI runs a palisade CLI command against this agent's socket.
func (a *Agent) CLI(args ...string) (string, error) {
	args = append(args, "--socket", a.Socket)
	out, err := exec.Command(Binary(a.t), args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("palisade %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// ServeDeathstar serves the deathstar API on port 80 inside the namespace until the test ends.
func ServeDeathstar(t testing.TB, ns *topology.Namespace, name string) {
	t.Helper()
	ln, err := ns.Listen("tcp4", ":80")
	if err != nil {
		t.Fatalf("deathstar listen: %v", err)
	}
	srv := &http.Server{Handler: demo.DeathstarHandler(name), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
}

// HTTPClient makes HTTP requests from inside a namespace, a new connection per request.
func HTTPClient(ns *topology.Namespace, timeout time.Duration) *http.Client {
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			DisableKeepAlives: true,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				return ns.DialContext(ctx, &net.Dialer{Timeout: timeout}, network, addr)
			},
		},
	}
}
