package harness

import (
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/palisade-mesh/palisade/clustermesh"
	"github.com/palisade-mesh/palisade/kvstore/etcdtest"
	"github.com/palisade-mesh/palisade/test/topology"
)

// MeshAPIPort is where every test cluster's mesh API server listens, on its control-plane address.
const MeshAPIPort = 4245

// MeshCluster is one cluster of a multi-cluster test: its own etcd, a control-plane namespace on
// the fabric running its mesh API server, nodes with agents, and its cluster directory.
type MeshCluster struct {
	Name   string
	ID     int
	Etcd   *etcdtest.Embedded
	KV     string         // the etcd endpoint (a unix socket, reachable from every namespace)
	CP     *topology.Node // control plane: runs the mesh API server, no agent
	Nodes  []*topology.Node
	Agents []*Agent
	Dir    clustermesh.ClusterDir
	Server *Process
}

// MeshOptions shape StartMesh.
type MeshOptions struct {
	Clusters        int      // default 2
	NodesPerCluster int      // default 2
	Connect         [][2]int // pairs of cluster indexes (from 0) to connect; default every pair
	AgentFlags      []string // extra flags for every agent
}

// StartMesh builds the clusters on topo: per cluster an etcd, a mesh API server and agents, all
// sharing one mesh CA; clusters are named cluster1.. with IDs 1.. and connected pairwise with
// `palisade clustermesh connect`. Nodes are named c<i>n<j>, control planes c<i>cp.
func StartMesh(t testing.TB, topo *topology.Topology, opts MeshOptions) []*MeshCluster {
	t.Helper()
	if opts.Clusters == 0 {
		opts.Clusters = 2
	}
	if opts.NodesPerCluster == 0 {
		opts.NodesPerCluster = 2
	}
	if opts.Connect == nil {
		for i := 0; i < opts.Clusters; i++ {
			for j := i + 1; j < opts.Clusters; j++ {
				opts.Connect = append(opts.Connect, [2]int{i, j})
			}
		}
	}
	work := etcdtest.SocketDir(t)
	caDir := filepath.Join(work, "ca")
	CLI(t, "certs", "init", "--trust-domain", "mesh.test", "--dir", caDir)
	clusters := make([]*MeshCluster, opts.Clusters)
	for i := range clusters {
		c := &MeshCluster{Name: fmt.Sprintf("cluster%d", i+1), ID: i + 1}
		c.Etcd = etcdtest.StartRestartable(t)
		c.KV = c.Etcd.Endpoints()[1]
		c.CP = topo.MustAddNode(t, fmt.Sprintf("c%dcp", i+1))
		for j := 1; j <= opts.NodesPerCluster; j++ {
			c.Nodes = append(c.Nodes, topo.MustAddNode(t, fmt.Sprintf("c%dn%d", i+1, j)))
		}
		dir := filepath.Join(work, c.Name)
		CLI(t, "clustermesh", "init", "--cluster", c.Name, "--id", strconv.Itoa(c.ID), "--address", c.Address(), "--ca-dir", caDir, "--dir", dir)
		d, err := clustermesh.OpenClusterDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		c.Dir = d
		clusters[i] = c
	}
	for _, p := range opts.Connect {
		CLI(t, "clustermesh", "connect", "--dir", clusters[p[0]].Dir.Path, "--peer-dir", clusters[p[1]].Dir.Path)
	}
	for _, c := range clusters {
		c.startServer(t)
	}
	for _, c := range clusters {
		for _, n := range c.Nodes {
			flags := append([]string{"--clustermesh-config", c.Dir.Remotes()}, opts.AgentFlags...)
			c.Agents = append(c.Agents, StartAgent(t, n, c.Name, c.ID, c.KV, work, flags...))
		}
	}
	return clusters
}

// Address is host:port of the cluster's mesh API server.
func (c *MeshCluster) Address() string {
	return net.JoinHostPort(c.CP.FabricIP.String(), strconv.Itoa(MeshAPIPort))
}

func (c *MeshCluster) startServer(t testing.TB) {
	t.Helper()
	srv := c.Dir.ServerCert()
	args := []string{"mesh-apiserver",
		"--cluster-name", c.Name, "--cluster-id", strconv.Itoa(c.ID),
		"--kvstore-endpoints", c.KV, "--listen", c.Address(),
		"--ca-file", c.Dir.CABundle(), "--cert-file", srv.Cert, "--key-file", srv.Key,
		"--signing-key", c.Dir.SigningKey(), "--metrics-addr", "127.0.0.1:9963",
	}
	c.Server = NewProcess(t, c.CP.NS, "mesh API server of "+c.Name, args, func() error {
		conn, err := c.CP.NS.DialTimeout("tcp", c.Address(), time.Second)
		if err == nil {
			conn.Close()
		}
		return err
	})
	c.Server.Start()
}

// CLI runs a palisade command that needs no agent and fails the test if it fails.
func CLI(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command(Binary(t), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("palisade %v: %v\n%s", args, err, out)
	}
	return string(out)
}
