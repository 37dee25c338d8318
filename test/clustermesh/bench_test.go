package clustermesh_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/palisade-mesh/palisade/identity"
	"github.com/palisade-mesh/palisade/internal/testenv"
	"github.com/palisade-mesh/palisade/kvstore"
	"github.com/palisade-mesh/palisade/kvstore/etcdtest"
	"github.com/palisade-mesh/palisade/test/harness"
	"github.com/palisade-mesh/palisade/test/topology"
)

// fillCluster makes n endpoints (n < 65,536) exist in cluster c as a simulated node would: the
// node's entry, n identities through the real allocator (labels from labelsOf) and an ipcache
// entry for each in the node's pod CIDR, under a lease held until the benchmark ends.
func fillCluster(b *testing.B, c *harness.MeshCluster, n int, labelsOf func(i int) map[string]string) {
	b.Helper()
	ctx := context.Background()
	kv := etcdtest.NewClient(b, c.Etcd)
	alloc, err := identity.NewAllocator(ctx, kv, identity.AllocatorConfig{
		Node:     "bench-sim",
		Cluster:  identity.ClusterConfig{Name: c.Name, ID: uint32(c.ID), MaxConnectedClusters: identity.DefaultLayout.MaxConnectedClusters},
		LeaseTTL: time.Minute,
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { alloc.Close() })
	lease, err := kv.GrantLease(ctx, 15*time.Minute)
	if err != nil {
		b.Fatal(err)
	}
	ids := make([]identity.ID, n)
	var (
		wg       sync.WaitGroup
		errMu    sync.Mutex
		firstErr error
	)
	const workers = 16
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += workers {
				lbls, err := identity.EndpointLabels(labelsOf(i), "default", nil, c.Name)
				if err == nil {
					ids[i], _, err = alloc.Allocate(ctx, lbls)
				}
				if err != nil {
					errMu.Lock()
					firstErr = err
					errMu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		b.Fatal(firstErr)
	}
	// The simulated node owns 10.200.0.0/16: a remote cluster's ipcache entries are imported only
	// inside the pod CIDRs its nodes announce.
	node, _ := json.Marshal(map[string]any{"name": "bench-sim", "cluster": c.Name, "ips": []string{"10.99.0.250"}, "podCIDRs": []string{"10.200.0.0/16"}})
	if err := kv.Put(ctx, "nodes/bench-sim", node, lease); err != nil {
		b.Fatal(err)
	}
	base := netip.MustParseAddr("10.200.0.0").As4()
	var ops []kvstore.Op
	for i, id := range ids {
		ip := netip.AddrFrom4([4]byte{base[0], base[1] + byte(i>>16), byte(i >> 8), byte(i)})
		v, _ := json.Marshal(map[string]any{"identity": id, "hostIP": "10.99.0.250", "node": "bench-sim", "endpointID": i + 1})
		ops = append(ops, kvstore.OpPut("ipcache/"+ip.String()+"/32", v, lease))
		if len(ops) == 1000 || i == len(ids)-1 {
			if _, err := kv.Txn(ctx, nil, ops, nil); err != nil {
				b.Fatal(err)
			}
			ops = ops[:0]
		}
	}
}

// remoteCounts reads the identities and endpoints (ipcache entries) the agent imported from
// remote, from `clustermesh status -o json`; -1 when it cannot tell.
func remoteCounts(a *harness.Agent, remote string) (identities, endpoints int) {
	out, err := a.CLI("clustermesh", "status", "-o", "json")
	if err != nil {
		return -1, -1
	}
	var status struct {
		Clusters []struct {
			Name       string `json:"name"`
			Identities int    `json:"identities"`
			Endpoints  int    `json:"endpoints"`
		} `json:"clusters"`
	}
	if json.Unmarshal([]byte(out), &status) != nil {
		return -1, -1
	}
	for _, c := range status.Clusters {
		if c.Name == remote {
			return c.Identities, c.Endpoints
		}
	}
	return -1, -1
}

func writePolicy(b *testing.B, doc string) string {
	b.Helper()
	path := filepath.Join(b.TempDir(), "policy.yaml")
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		b.Fatal(err)
	}
	return path
}

const fromCluster2Tiefighters = `
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: deathstar-from-cluster2, namespace: default}
spec:
  endpointSelector: {matchLabels: {class: deathstar}}
  ingress:
  - fromEndpoints:
    - matchLabels: {class: tiefighter, io.cilium.k8s.policy.cluster: cluster2}
    toPorts:
    - ports: [{port: "80", protocol: TCP}]
`

// BenchmarkMesh_Propagation measures, with `existing` tiefighters already in cluster2 (all
// selected by cluster1's policy, so all imported), the time from `endpoint create` of a new
// tiefighter (with labels of its own, so a new identity) in cluster2 until its first connection to
// cluster1's deathstar is accepted: allocation, cluster2's etcd, its mesh API server, cluster1's
// agent, the kernel.
//
//	go test -run '^$' -bench Mesh_Propagation -benchtime 1x -timeout 30m ./test/clustermesh/
func BenchmarkMesh_Propagation(b *testing.B) {
	testenv.RequireRoot(b)
	for _, existing := range []int{1000, 10000} {
		b.Run("existing="+strconv.Itoa(existing), func(b *testing.B) {
			topo := topology.NewForTest(b, topology.Options{})
			mesh := harness.StartMesh(b, topo, harness.MeshOptions{Clusters: 2, NodesPerCluster: 1})
			c1, c2 := mesh[0], mesh[1]
			harness.ImportPolicy(b, c1.KV, writePolicy(b, fromCluster2Tiefighters))
			fillCluster(b, c2, existing, func(i int) map[string]string {
				return map[string]string{"org": "empire", "class": "tiefighter", "instance": "filler-" + strconv.Itoa(i)}
			})
			dsNS := topo.MustAddNamespace(b, "ds")
			ds := c1.Agents[0].CreateEndpoint(b, dsNS, "org=empire,class=deathstar")
			ln, err := dsNS.Listen("tcp4", ":80")
			if err != nil {
				b.Fatal(err)
			}
			defer ln.Close()
			go acceptAndClose(ln)
			harness.WaitFor(b, 3*time.Minute, "cluster1 to import cluster2's tiefighters", func() bool {
				ids, eps := remoteCounts(c1.Agents[0], "cluster2")
				return ids >= existing && eps >= existing
			})

			const samples = 20
			var total, create []time.Duration
			for i := 0; i < samples; i++ {
				ns := topo.MustAddNamespace(b, "new"+strconv.Itoa(i))
				start := time.Now()
				c2.Agents[0].CreateEndpoint(b, ns, fmt.Sprintf("org=empire,class=tiefighter,instance=new-%d", i))
				create = append(create, time.Since(start))
				for {
					conn, err := ns.DialTimeout("tcp4", net.JoinHostPort(ds.IPv4, "80"), 25*time.Millisecond)
					if err == nil {
						conn.Close()
						break
					}
					if time.Since(start) > 30*time.Second {
						b.Fatalf("new tiefighter %d never reached the deathstar: %v", i, err)
					}
				}
				total = append(total, time.Since(start))
			}
			b.ReportMetric(ms(percentile(total, 50)), "p50-ms")
			b.ReportMetric(ms(percentile(total, 99)), "p99-ms")
			b.ReportMetric(ms(percentile(create, 50)), "create-p50-ms")
			b.Logf("existing=%d: create->enforced p50 %s p99 %s (endpoint create alone p50 %s)", existing,
				percentile(total, 50), percentile(total, 99), percentile(create, 50))
		})
	}
}

// BenchmarkMesh_AgentMemory measures the RSS of two agents of cluster1 with the same policy
// (it selects cluster2's tiefighters, 5 of the 50,000 identities of cluster2): one with the
// selector-scoped watch (the default) and one started with --clustermesh-full-watch, which imports
// every remote identity and ipcache entry.
//
//	go test -run '^$' -bench Mesh_AgentMemory -benchtime 1x -timeout 30m ./test/clustermesh/
func BenchmarkMesh_AgentMemory(b *testing.B) {
	testenv.RequireRoot(b)
	const remote = 50000
	topo := topology.NewForTest(b, topology.Options{})
	mesh := harness.StartMesh(b, topo, harness.MeshOptions{Clusters: 2, NodesPerCluster: 1})
	c1, c2 := mesh[0], mesh[1]
	harness.ImportPolicy(b, c1.KV, writePolicy(b, fromCluster2Tiefighters))
	fillCluster(b, c2, remote, func(i int) map[string]string {
		class := "filler"
		if i%10000 == 0 {
			class = "tiefighter"
		}
		return map[string]string{"org": "empire", "class": class, "instance": "filler-" + strconv.Itoa(i)}
	})
	scopedAgent := c1.Agents[0]
	fullAgent := harness.StartAgent(b, topo.MustAddNode(b, "c1full"), c1.Name, c1.ID, c1.KV, etcdtest.SocketDir(b),
		"--clustermesh-config", c1.Dir.Remotes(), "--clustermesh-full-watch")
	measure := func(a *harness.Agent, want int) (float64, int) {
		harness.WaitFor(b, 5*time.Minute, fmt.Sprintf("%s to import %d identities and their endpoints", a.Node().Name, want), func() bool {
			ids, eps := remoteCounts(a, "cluster2")
			return ids >= want && eps >= want
		})
		time.Sleep(5 * time.Second) // let the Go garbage collector settle
		ids, _ := remoteCounts(a, "cluster2")
		return rssMB(b, a.PID()), ids
	}
	full, fullIDs := measure(fullAgent, remote)
	scoped, scopedIDs := measure(scopedAgent, remote/10000)
	b.ReportMetric(full, "full-MB")
	b.ReportMetric(scoped, "scoped-MB")
	b.Logf("agent RSS, full watch (%d remote identities): %.1f MB; selector-scoped watch (%d): %.1f MB", fullIDs, full, scopedIDs, scoped)
}

func rssMB(b *testing.B, pid int) float64 {
	out, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.Atoi(f[1])
			return float64(kb) / 1024
		}
	}
	b.Fatal("no VmRSS in /proc/<pid>/status")
	return 0
}

func acceptAndClose(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		c.Close()
	}
}

func percentile(ds []time.Duration, p int) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[(len(s)-1)*p/100]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
