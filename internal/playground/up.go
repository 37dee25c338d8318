package playground

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	apiv1 "github.com/palisade-mesh/palisade/api/v1"
	"github.com/palisade-mesh/palisade/test/topology"
)

// Options shape a playground.
type Options struct {
	// Dir holds state, sockets and logs (default DefaultDir).
	Dir string
	// Nodes is how many nodes to run (1..8, default 2).
	Nodes int
	// Cluster and ClusterID name the cluster (default "playground", 1).
	Cluster   string
	ClusterID uint32
	// Binary is the palisade binary the daemons run (default: this program).
	Binary string
}

func (o Options) withDefaults() (Options, error) {
	if o.Dir == "" {
		o.Dir = DefaultDir
	}
	if o.Nodes == 0 {
		o.Nodes = 2
	}
	if o.Nodes < 1 || o.Nodes > 8 {
		return o, fmt.Errorf("--nodes %d: between 1 and 8", o.Nodes)
	}
	if o.Cluster == "" {
		o.Cluster = "playground"
	}
	if o.ClusterID == 0 {
		o.ClusterID = 1
	}
	if o.Binary == "" {
		exe, err := os.Executable()
		if err != nil {
			return o, fmt.Errorf("find the palisade binary: %w", err)
		}
		o.Binary = exe
	}
	return o, nil
}

// Up builds the namespaces, starts etcd in the control-plane namespace and an agent in every node,
// and waits until all agents answer. On failure it removes what it made.
func Up(ctx context.Context, opts Options, progress io.Writer) (st *State, err error) {
	opts, err = opts.withDefaults()
	if err != nil {
		return nil, err
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("the playground needs root (network namespaces, eBPF)")
	}
	if _, err := os.Stat(statePath(opts.Dir)); err == nil {
		return nil, fmt.Errorf("a playground is already running in %s: `palisade dev down` first", opts.Dir)
	}
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, err
	}
	topo, err := topology.New(topology.Options{Prefix: "pdev"})
	if err != nil {
		return nil, err
	}
	st = &State{Dir: opts.Dir, Cluster: opts.Cluster, ClusterID: opts.ClusterID, NSPrefix: "pdev-" + topo.Suffix() + "-"}
	defer func() {
		if err != nil {
			_ = st.Down()
			_ = topo.Close()
		}
	}()
	if err := st.save(); err != nil {
		return nil, err
	}

	fmt.Fprintln(progress, "starting etcd in the control-plane namespace")
	cp, err := topo.AddNode("cp")
	if err != nil {
		return nil, err
	}
	st.Etcd, err = startDaemon(cp.NS, opts.Binary, filepath.Join(opts.Dir, "etcd.log"), "kvstore", "serve",
		"--data-dir", filepath.Join(opts.Dir, "etcd"),
		"--listen-client-urls", "http://"+cp.FabricIP.String()+":2379,"+st.KvstoreEndpoint(),
		"--listen-peer-urls", "http://127.0.0.1:2380")
	if err != nil {
		return nil, err
	}
	if err := st.save(); err != nil {
		return nil, err
	}
	if err := waitForSocket(ctx, filepath.Join(opts.Dir, "etcd.sock"), st.Etcd); err != nil {
		return nil, err
	}

	for i := 1; i <= opts.Nodes; i++ {
		name := fmt.Sprintf("node%d", i)
		fmt.Fprintf(progress, "starting %s and its agent\n", name)
		n, err := topo.AddNode(name)
		if err != nil {
			return nil, err
		}
		ns := NodeState{
			Name: name, Namespace: n.NS.Name, FabricIP: n.FabricIP.String(), PodCIDR: n.PodCIDR.String(),
			Socket: filepath.Join(opts.Dir, name+".sock"),
			PinDir: "/sys/fs/bpf/" + st.NSPrefix + name,
		}
		ns.Agent, err = startDaemon(n.NS, opts.Binary, filepath.Join(opts.Dir, name+".log"), "agent",
			"--cluster-name", opts.Cluster, "--cluster-id", fmt.Sprint(opts.ClusterID),
			"--node-name", name, "--node-ip", ns.FabricIP, "--pod-cidr", ns.PodCIDR,
			"--kvstore-endpoints", st.KvstoreEndpoint(),
			"--state-dir", filepath.Join(opts.Dir, name+"-state"), "--socket", ns.Socket,
			"--bpf-pin-dir", ns.PinDir, "--metrics-addr", "127.0.0.1:9962")
		st.Nodes = append(st.Nodes, ns)
		if err != nil {
			return nil, err
		}
		if err := st.save(); err != nil {
			return nil, err
		}
	}
	for _, n := range st.Nodes {
		if err := waitForAgent(ctx, n); err != nil {
			return nil, err
		}
	}
	return st, nil
}

// startDaemon runs the palisade binary inside ns in its own session, so it outlives this command,
// with its output in logPath.
func startDaemon(ns *topology.Namespace, binary, logPath string, args ...string) (Process, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return Process{}, err
	}
	defer logFile.Close()
	cmd := exec.Command(binary, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := ns.Start(cmd); err != nil {
		return Process{}, err
	}
	p := Process{PID: cmd.Process.Pid, Log: logPath}
	// The daemon is on its own now; Down stops it by its PID.
	_ = cmd.Process.Release()
	return p, nil
}

func alive(pid int) bool {
	return pid > 0 && syscall.Kill(pid, 0) == nil
}

func waitForSocket(ctx context.Context, path string, p Process) error {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		if !alive(p.PID) {
			return fmt.Errorf("process %d exited; see %s", p.PID, p.Log)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s did not appear within 60s; see %s", path, p.Log)
}

// waitForAgent waits until the node's agent answers its status call.
func waitForAgent(ctx context.Context, n NodeState) error {
	if err := waitForSocket(ctx, n.Socket, n.Agent); err != nil {
		return fmt.Errorf("agent of %s: %w", n.Name, err)
	}
	client, closeFn, err := agentClient(n)
	if err != nil {
		return err
	}
	defer closeFn()
	deadline := time.Now().Add(60 * time.Second)
	for {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := client.Status(cctx, &apiv1.StatusRequest{})
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || !alive(n.Agent.PID) {
			return fmt.Errorf("agent of %s not ready: %v; see %s", n.Name, err, n.Agent.Log)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func agentClient(n NodeState) (apiv1.AgentClient, func(), error) {
	conn, err := grpc.NewClient("unix://"+n.Socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, nil, fmt.Errorf("connect to the agent of %s: %w", n.Name, err)
	}
	return apiv1.NewAgentClient(conn), func() { conn.Close() }, nil
}
