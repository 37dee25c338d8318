package playground

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	apiv1 "github.com/palisade-mesh/palisade/api/v1"
	"github.com/palisade-mesh/palisade/clustermesh"
	"github.com/palisade-mesh/palisade/test/topology"
)

// Options shape a playground.
type Options struct {
	// Dir holds state, sockets and logs (default DefaultDir).
	Dir string
	// Clusters is how many clusters to run (1..8, default 1). With more than one they are named
	// cluster1.. with IDs 1.., each with its own etcd and mesh API server, connected pairwise in
	// a mesh; their nodes are named c<i>n<j>.
	Clusters int
	// Nodes is how many nodes each cluster runs (1..8, default 2).
	Nodes int
	// Cluster and ClusterID name a single cluster (default "playground", 1); a mesh names its
	// clusters itself.
	Cluster   string
	ClusterID uint32
	// Binary is the palisade binary the daemons run (default: this program).
	Binary string
}

func (o Options) withDefaults() (Options, error) {
	if o.Dir == "" {
		o.Dir = DefaultDir
	}
	if o.Clusters == 0 {
		o.Clusters = 1
	}
	if o.Clusters < 1 || o.Clusters > 8 {
		return o, fmt.Errorf("--clusters %d: between 1 and 8", o.Clusters)
	}
	if o.Nodes == 0 {
		o.Nodes = 2
	}
	if o.Nodes < 1 || o.Nodes > 8 {
		return o, fmt.Errorf("--nodes %d: between 1 and 8", o.Nodes)
	}
	if o.Clusters > 1 && (o.Cluster != "" || o.ClusterID != 0) {
		return o, errors.New("a playground of several clusters names them cluster1.. with IDs 1..: drop --cluster-name and --cluster-id")
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

// Up builds the namespaces, starts every cluster's etcd (and, in a mesh, its mesh API server) in
// the cluster's control-plane namespace and an agent in every node, and waits until all of them
// answer. On failure it removes what it made.
func Up(ctx context.Context, opts Options, progress io.Writer) (*State, error) {
	opts, err := opts.withDefaults()
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
	st := &State{Dir: opts.Dir, NSPrefix: "pdev-" + topo.Suffix() + "-"}
	if err := st.start(ctx, topo, opts, progress); err != nil {
		if logs := st.keepLogs(); logs != "" {
			err = fmt.Errorf("%w (the daemons' logs are kept in %s)", err, logs)
		}
		return nil, errors.Join(err, st.Down(), topo.Close())
	}
	return st, nil
}

// keepLogs copies the daemons' logs out of the state directory, which Down removes, so that a
// failed start can be diagnosed. It returns where they went, or "" if there were none.
func (s *State) keepLogs() string {
	logs, _ := filepath.Glob(filepath.Join(s.Dir, "*.log"))
	if len(logs) == 0 {
		return ""
	}
	dir, err := os.MkdirTemp("", "palisade-dev-logs-")
	if err != nil {
		return ""
	}
	for _, l := range logs {
		if raw, err := os.ReadFile(l); err == nil {
			_ = os.WriteFile(filepath.Join(dir, filepath.Base(l)), raw, 0o600)
		}
	}
	return dir
}

// start builds the playground s describes, recording every namespace and process in s's
// state file as soon as it exists, so that Down finds it even if start fails half-way.
func (s *State) start(ctx context.Context, topo *topology.Topology, opts Options, progress io.Writer) (err error) {
	if err := s.save(); err != nil {
		return err
	}
	fmt.Fprintln(progress, "creating the namespaces: fabric, control planes, nodes")
	if err := s.addNamespaces(topo, opts); err != nil {
		return err
	}
	if err := s.save(); err != nil {
		return err
	}
	if s.Mesh() {
		fmt.Fprintf(progress, "creating the mesh CA and a cluster directory per cluster, connecting every pair\n")
		if err := s.setUpMesh(); err != nil {
			return err
		}
		if err := s.save(); err != nil {
			return err
		}
	}

	for i := range s.Clusters {
		c := &s.Clusters[i]
		fmt.Fprintf(progress, "starting etcd of %s in %s\n", c.Name, c.ControlPlane)
		if c.Etcd, err = s.startEtcd(*c, opts.Binary); err != nil {
			return err
		}
		if err := s.save(); err != nil {
			return err
		}
	}
	for _, c := range s.Clusters {
		if err := waitForSocket(ctx, c.EtcdSocket, c.Etcd); err != nil {
			return fmt.Errorf("etcd of %s: %w", c.Name, err)
		}
	}

	if s.Mesh() {
		for i := range s.Clusters {
			c := &s.Clusters[i]
			fmt.Fprintf(progress, "starting the mesh API server of %s on %s\n", c.Name, c.MeshAddress)
			p, err := s.startMeshAPIServer(*c, opts.Binary)
			if err != nil {
				return err
			}
			c.MeshAPIServer = &p
			if err := s.save(); err != nil {
				return err
			}
		}
		for _, c := range s.Clusters {
			if err := waitForMeshAPIServer(ctx, c); err != nil {
				return err
			}
		}
	}

	for i := range s.Clusters {
		c := &s.Clusters[i]
		for j := range c.Nodes {
			n := &c.Nodes[j]
			fmt.Fprintf(progress, "starting the agent of %s (%s)\n", n.Name, c.Name)
			if n.Agent, err = s.startAgent(*c, *n, opts.Binary); err != nil {
				return err
			}
			if err := s.save(); err != nil {
				return err
			}
		}
	}
	for _, n := range s.Nodes() {
		if err := waitForAgent(ctx, n); err != nil {
			return err
		}
	}
	return nil
}

// addNamespaces adds every cluster's control-plane namespace and nodes to the topology. The
// topology gives each node its own fabric address and pod CIDR, so nothing overlaps across
// clusters, and routes every node's pod CIDR from every other node.
func (s *State) addNamespaces(topo *topology.Topology, opts Options) error {
	for i := 1; i <= opts.Clusters; i++ {
		c := ClusterState{Name: opts.Cluster, ID: opts.ClusterID}
		cpName, nodeName := "cp", func(j int) string { return fmt.Sprintf("node%d", j) }
		if opts.Clusters > 1 {
			c.Name, c.ID = fmt.Sprintf("cluster%d", i), uint32(i)
			cpName, nodeName = fmt.Sprintf("c%dcp", i), func(j int) string { return fmt.Sprintf("c%dn%d", i, j) }
		}
		cp, err := topo.AddNode(cpName)
		if err != nil {
			return err
		}
		c.ControlPlane, c.ControlPlaneIP = cp.NS.Name, cp.FabricIP.String()
		for j := 1; j <= opts.Nodes; j++ {
			n, err := topo.AddNode(nodeName(j))
			if err != nil {
				return err
			}
			c.Nodes = append(c.Nodes, NodeState{
				Name: n.Name, Cluster: c.Name, Namespace: n.NS.Name,
				FabricIP: n.FabricIP.String(), PodCIDR: n.PodCIDR.String(),
				Socket: filepath.Join(s.Dir, n.Name+".sock"),
				PinDir: "/sys/fs/bpf/" + s.NSPrefix + n.Name,
			})
		}
		s.Clusters = append(s.Clusters, c)
	}
	for i := range s.Clusters {
		s.Clusters[i].EtcdSocket = s.file(s.Clusters[i], "etcd.sock")
	}
	return nil
}

// file names a per-cluster file in the state directory: plain in a single-cluster playground
// (etcd.sock, as before meshes existed), prefixed with the cluster's name in a mesh.
func (s *State) file(c ClusterState, name string) string {
	if s.Mesh() {
		name = c.Name + "-" + name
	}
	return filepath.Join(s.Dir, name)
}

func (s *State) startEtcd(c ClusterState, binary string) (Process, error) {
	ns, err := topology.OpenNamespace(c.ControlPlane)
	if err != nil {
		return Process{}, err
	}
	return startDaemon(ns, binary, s.file(c, "etcd.log"), "kvstore", "serve",
		"--data-dir", s.file(c, "etcd"),
		"--listen-client-urls", "http://"+c.ControlPlaneIP+":2379,"+c.KvstoreEndpoint(),
		"--listen-peer-urls", "http://127.0.0.1:2380")
}

func (s *State) startAgent(c ClusterState, n NodeState, binary string) (Process, error) {
	ns, err := topology.OpenNamespace(n.Namespace)
	if err != nil {
		return Process{}, err
	}
	args := []string{"agent",
		"--cluster-name", c.Name, "--cluster-id", strconv.FormatUint(uint64(c.ID), 10),
		"--node-name", n.Name, "--node-ip", n.FabricIP, "--pod-cidr", n.PodCIDR,
		"--kvstore-endpoints", c.KvstoreEndpoint(),
		"--state-dir", filepath.Join(s.Dir, n.Name+"-state"), "--socket", n.Socket,
		"--bpf-pin-dir", n.PinDir, "--metrics-addr", "127.0.0.1:9962"}
	if c.MeshDir != "" {
		args = append(args, "--clustermesh-config", filepath.Join(c.MeshDir, clustermesh.RemotesDir))
	}
	return startDaemon(ns, binary, filepath.Join(s.Dir, n.Name+".log"), args...)
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

// Running reports whether the process still runs (a zombie does not).
func (p Process) Running() bool { return alive(p.PID) }

// alive reports whether pid runs. A zombie does not: the daemons outlive `dev up`, so their
// parent is whatever adopted them, and not every init reaps promptly (or at all, in containers).
func alive(pid int) bool {
	if pid <= 0 || syscall.Kill(pid, 0) != nil {
		return false
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return !errors.Is(err, os.ErrNotExist)
	}
	// The state follows the command, which is in parentheses and may itself contain ") ".
	if i := bytes.LastIndexByte(stat, ')'); i >= 0 && i+2 < len(stat) {
		return stat[i+2] != 'Z'
	}
	return true
}

// waitUntil polls ready every 100 ms for up to a minute, giving up early when p exits.
func waitUntil(ctx context.Context, what string, p Process, ready func() error) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		err := ready()
		if err == nil {
			return nil
		}
		if !alive(p.PID) {
			return fmt.Errorf("%s: process %d exited; see %s", what, p.PID, p.Log)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready within 60s: %v; see %s", what, err, p.Log)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func waitForSocket(ctx context.Context, path string, p Process) error {
	return waitUntil(ctx, path, p, func() error {
		_, err := os.Stat(path)
		return err
	})
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
	return waitUntil(ctx, "agent of "+n.Name, n.Agent, func() error {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, err := client.Status(cctx, &apiv1.StatusRequest{})
		return err
	})
}

// waitForMeshAPIServer waits until the cluster's mesh API server accepts connections on the
// fabric, dialling from its control-plane namespace.
func waitForMeshAPIServer(ctx context.Context, c ClusterState) error {
	ns, err := topology.OpenNamespace(c.ControlPlane)
	if err != nil {
		return err
	}
	return waitUntil(ctx, "mesh API server of "+c.Name, *c.MeshAPIServer, func() error {
		conn, err := ns.DialContext(ctx, &net.Dialer{Timeout: time.Second}, "tcp", c.MeshAddress)
		if err == nil {
			conn.Close()
		}
		return err
	})
}

func agentClient(n NodeState) (apiv1.AgentClient, func(), error) {
	conn, err := grpc.NewClient("unix://"+n.Socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, nil, fmt.Errorf("connect to the agent of %s: %w", n.Name, err)
	}
	return apiv1.NewAgentClient(conn), func() { conn.Close() }, nil
}
