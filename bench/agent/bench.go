package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"time"

	"github.com/palisade-mesh/palisade/kvstore"
	"github.com/palisade-mesh/palisade/kvstore/embedded"
	"github.com/palisade-mesh/palisade/test/topology"
)

// Cluster identity of the benchmark: the agents and the simulated node must agree on it.
const (
	clusterName = "cluster1"
	clusterID   = 1
)

// bench is the cluster every figure runs on: an embedded etcd, two node namespaces with one agent
// each, and the endpoints of figure 1 with their listeners.
type bench struct {
	cfg        config
	dir        string // work directory: binary, etcd data, sockets, agent state and logs
	bin        string
	kvEndpoint string // etcd's unix socket, reachable from every namespace
	kv         *kvstore.Client
	topo       *topology.Topology
	agents     []*agentProc
	listeners  *listeners
	policies   policyFiles

	members  []*endpoint // figure 1: selected by one policy, half on each node
	intruder *endpoint   // selected by nothing, never allowed in
	server   *endpoint   // figure 2's listener

	// teardown undoes the setup in reverse order.
	teardown []func() error
}

// endpoint is an endpoint the harness created through an agent.
type endpoint struct {
	ns    *topology.Namespace
	agent *agentProc
	id    uint32
	ip    string
}

func newBench(ctx context.Context, cfg config) (*bench, error) {
	b := &bench{cfg: cfg, listeners: &listeners{}}
	dir, err := os.MkdirTemp("", "pal-bench-")
	if err != nil {
		return b, err
	}
	b.dir = dir
	b.onClose(func() error { return os.RemoveAll(dir) })

	if b.bin = cfg.palisade; b.bin == "" {
		if b.bin, err = buildPalisade(ctx, dir); err != nil {
			return b, err
		}
	}
	if err := b.startEtcd(ctx); err != nil {
		return b, err
	}
	if b.topo, err = topology.New(topology.Options{Prefix: "palab"}); err != nil {
		return b, err
	}
	b.onClose(func() error {
		err := b.topo.Close()
		if left := b.topo.Leftovers(); len(left) > 0 {
			err = errors.Join(err, fmt.Errorf("left behind: %v", left))
		}
		return err
	})
	for _, name := range []string{"n1", "n2"} {
		node, err := b.topo.AddNode(name)
		if err != nil {
			return b, err
		}
		a, err := startAgent(ctx, b, node)
		if a != nil {
			b.agents = append(b.agents, a)
			b.onClose(a.remove)
		}
		if err != nil {
			return b, err
		}
	}
	b.onClose(b.listeners.close)
	if b.policies, err = writePolicyFiles(dir); err != nil {
		return b, err
	}
	// The listener of figure 2 is in default-deny from the start.
	if _, err := b.importPolicy(ctx, b.policies.create); err != nil {
		return b, err
	}
	log.Printf("creating %d endpoints", cfg.endpoints+2)
	if err := b.createMembers(ctx); err != nil {
		return b, err
	}
	return b, nil
}

// onClose registers an undo step of the setup.
func (b *bench) onClose(fn func() error) { b.teardown = append(b.teardown, fn) }

// close undoes the setup: listeners, agents (SIGTERM, then their pins and state), namespaces,
// the kvstore client, etcd and the work directory.
func (b *bench) close() error {
	log.Printf("removing everything the benchmark created")
	var errs []error
	for _, fn := range slices.Backward(b.teardown) {
		if err := fn(); err != nil {
			errs = append(errs, err)
		}
	}
	b.teardown = nil
	return errors.Join(errs...)
}

func buildPalisade(ctx context.Context, dir string) (string, error) {
	bin := filepath.Join(dir, "palisade")
	log.Printf("building palisade")
	out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/palisade-mesh/palisade/cmd/palisade").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build ./cmd/palisade: %w\n%s", err, out)
	}
	return bin, nil
}

// startEtcd runs the cluster's etcd in this process, listening on a unix socket that the agents
// in their namespaces and the CLI reach alike, and on a loopback port that etcd needs to advertise.
func (b *bench) startEtcd(ctx context.Context) error {
	socket := filepath.Join(b.dir, "etcd.sock")
	startCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	srv, err := embedded.Start(startCtx, embedded.Config{
		Name:          "bench",
		DataDir:       filepath.Join(b.dir, "etcd"),
		ClientURLs:    []string{"http://127.0.0.1:0", "unix://" + socket},
		UnsafeNoFsync: !b.cfg.fsync,
	})
	if err != nil {
		return err
	}
	b.onClose(srv.Close)
	b.kvEndpoint = "unix://" + socket
	if b.kv, err = kvstore.New(ctx, kvstore.Config{Endpoints: []string{b.kvEndpoint}}); err != nil {
		return err
	}
	b.onClose(b.kv.Close)
	return nil
}

// importPolicy runs `palisade policy import -f file` and returns how long the command took.
func (b *bench) importPolicy(ctx context.Context, file string) (time.Duration, error) {
	start := time.Now()
	out, err := exec.CommandContext(ctx, b.bin, "policy", "import", "-f", file, "--kvstore-endpoints", b.kvEndpoint).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("palisade policy import -f %s: %w\n%s", file, err, out)
	}
	return time.Since(start), nil
}
