// Command datapath measures HTTP throughput between two endpoints of one node of the test topology
// with no programs, with the eBPF datapath enforcing an L3/L4 allow (policy maps of 1 and 10,000
// entries), and with the same allow written as an iptables chain of 1,000 rules, all in the same
// run, and prints a Markdown table of medians and ratios. It needs root and iptables (Debian's
// iptables package) and leaves nothing behind: namespaces, pins and rules are its own and removed.
//
//	go run ./bench/datapath -duration 300ms -rounds 31
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/palisade-mesh/palisade/bpf"
	"github.com/palisade-mesh/palisade/test/topology"
)

const (
	idClient   = 1001
	idServer   = 1002
	serverPort = 8080
	chainName  = "PALBENCH"
)

type config struct {
	duration      time.Duration
	rounds        int
	concurrency   int
	entries       int
	iptablesRules int
}

func main() {
	var cfg config
	flag.DurationVar(&cfg.duration, "duration", 300*time.Millisecond, "measuring time per arm and mode")
	flag.IntVar(&cfg.rounds, "rounds", 31, "counted rounds (after one warm-up round); each runs every arm once, interleaved, and the table shows medians")
	flag.IntVar(&cfg.concurrency, "concurrency", 4, "concurrent client workers")
	flag.IntVar(&cfg.entries, "entries", 10000, "policy map entries of the large-map arm")
	flag.IntVar(&cfg.iptablesRules, "iptables-rules", 1000, "rules in the iptables baseline chain")
	flag.Parse()
	log.SetFlags(0)
	if err := run(cfg); err != nil {
		log.Fatal(err)
	}
}

// bench is the topology, datapath and server shared by all arms.
type bench struct {
	cfg      config
	node     *topology.Node
	client   *topology.Endpoint
	server   *topology.Endpoint
	dp       *bpf.Datapath
	iptables string
}

// arm is one configuration of the path between client and server.
type arm struct {
	name     string
	setup    func(*bench) error
	teardown func(*bench) error
}

func run(cfg config) error {
	if os.Geteuid() != 0 {
		return errors.New("needs root (network namespaces, eBPF, iptables)")
	}
	ipt, err := exec.LookPath("iptables-restore")
	if err != nil {
		return errors.New("iptables-restore not found: apt-get install iptables")
	}
	topo, err := topology.New(topology.Options{Prefix: "palbench"})
	if err != nil {
		return err
	}
	defer func() {
		if err := topo.Close(); err != nil {
			log.Printf("remove topology: %v", err)
		}
	}()
	b := &bench{cfg: cfg, iptables: ipt}
	if b.node, err = topo.AddNode("n1"); err != nil {
		return err
	}
	if b.client, err = b.node.AddEndpoint("cli"); err != nil {
		return err
	}
	if b.server, err = b.node.AddEndpoint("srv"); err != nil {
		return err
	}
	var suffix [3]byte
	_, _ = rand.Read(suffix[:])
	pinDir := filepath.Join(bpf.DefaultPinDir+"-bench", fmt.Sprintf("%d-%s", os.Getpid(), hex.EncodeToString(suffix[:])))
	if b.dp, err = bpf.Open(bpf.Options{PinDir: pinDir}); err != nil {
		return err
	}
	defer func() {
		if err := b.dp.Remove(); err != nil {
			log.Printf("remove datapath: %v", err)
		}
		_ = os.Remove(filepath.Dir(pinDir))
	}()
	for ep, id := range map[*topology.Endpoint]uint32{b.client: idClient, b.server: idServer} {
		if err := b.dp.UpsertIPCache(netip.PrefixFrom(ep.IP, 32), id); err != nil {
			return err
		}
	}
	stop, err := b.serve()
	if err != nil {
		return err
	}
	defer stop()

	arms := []arm{
		{name: "no programs", setup: func(*bench) error { return nil }, teardown: func(*bench) error { return nil }},
		{name: "eBPF L3/L4 allow, 1 entry", setup: func(b *bench) error { return b.attach(1) }, teardown: (*bench).detach},
		{name: fmt.Sprintf("eBPF L3/L4 allow, %d entries", cfg.entries), setup: func(b *bench) error { return b.attach(cfg.entries) }, teardown: (*bench).detach},
		{name: fmt.Sprintf("iptables chain of %d rules", cfg.iptablesRules), setup: (*bench).iptablesUp, teardown: (*bench).iptablesDown},
	}
	type result struct{ keepAlive, perConn []sample }
	results := make([]result, len(arms))
	// Round 0 warms everything up and is not counted.
	for r := 0; r <= cfg.rounds; r++ {
		for i, a := range arms {
			if err := a.setup(b); err != nil {
				return fmt.Errorf("set up %s: %w", a.name, err)
			}
			ka, err := b.load(true)
			var pc sample
			if err == nil {
				pc, err = b.load(false)
			}
			if r > 0 {
				results[i].keepAlive = append(results[i].keepAlive, ka)
				results[i].perConn = append(results[i].perConn, pc)
			}
			if terr := a.teardown(b); terr != nil {
				return errors.Join(err, fmt.Errorf("tear down %s: %w", a.name, terr))
			}
			if err != nil {
				return fmt.Errorf("%s: %w", a.name, err)
			}
			log.Printf("round %2d %-36s keep-alive %6.0f req/s %5.1f us/req  per-connection %6.0f req/s %5.1f us/req",
				r, a.name, ka.rps, ka.cpuPerReq, pc.rps, pc.cpuPerReq)
		}
	}

	// Other processes share the two cores, so throughput drifts by several times within seconds.
	// Each round measures every arm back to back, and every ratio is the median of the per-round
	// ratios, which cancels most of the drift. The CPU-based ratio (baseline CPU per request over
	// the arm's) is what throughput would be on idle cores, where the path is CPU-bound.
	modes := []struct {
		name string
		pick func(result) []sample
	}{
		{"keep-alive", func(r result) []sample { return r.keepAlive }},
		{"new connection per request", func(r result) []sample { return r.perConn }},
	}
	pairRatio := func(x, y int, pick func(result) []sample, f func(num, den sample) float64) float64 {
		var rs []float64
		for r := range pick(results[x]) {
			rs = append(rs, f(pick(results[x])[r], pick(results[y])[r]))
		}
		return median(rs)
	}
	byRPS := func(num, den sample) float64 { return num.rps / den.rps }
	byCPU := func(num, den sample) float64 { return den.cpuPerReq / num.cpuPerReq }
	for _, m := range modes {
		fmt.Printf("\n%s (%d rounds of %v, %d workers)\n\n", m.name, cfg.rounds, cfg.duration, cfg.concurrency)
		fmt.Printf("| path | req/s (median) | throughput ratio | CPU us/request (median) | CPU ratio |\n|---|---|---|---|---|\n")
		for i, a := range arms {
			var rps, cpu []float64
			for _, smp := range m.pick(results[i]) {
				rps = append(rps, smp.rps)
				cpu = append(cpu, smp.cpuPerReq)
			}
			fmt.Printf("| %s | %.0f | %.3f | %.1f | %.3f |\n", a.name, median(rps), pairRatio(i, 0, m.pick, byRPS),
				median(cpu), pairRatio(i, 0, m.pick, byCPU))
		}
		fmt.Printf("\n%d vs 1 policy entries: throughput %.3f, CPU %.3f\n", cfg.entries,
			pairRatio(2, 1, m.pick, byRPS), pairRatio(2, 1, m.pick, byCPU))
		fmt.Printf("eBPF (1 entry) vs iptables: throughput %.3f, CPU %.3f\n",
			pairRatio(1, 3, m.pick, byRPS), pairRatio(1, 3, m.pick, byCPU))
	}
	return nil
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

// serve runs the HTTP server inside the server endpoint.
func (b *bench) serve() (func(), error) {
	ln, err := b.server.NS.Listen("tcp", fmt.Sprintf(":%d", serverPort))
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok\n")
	}), ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
	}, nil
}

// sample is one measurement of one arm in one mode.
type sample struct {
	rps       float64 // requests per second
	cpuPerReq float64 // CPU time (user+system) of this process per request, in microseconds
}

// cpuTime is the CPU time of the whole process; the veth and stack work of both endpoints runs
// mostly in its threads' context, so it tracks the datapath's cost even when other processes
// steal the cores and make throughput unreliable.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// load runs the client workers for the configured duration.
func (b *bench) load(keepAlive bool) (sample, error) {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return b.client.NS.DialContext(ctx, nil, network, addr)
		},
		DisableKeepAlives:   !keepAlive,
		MaxIdleConnsPerHost: b.cfg.concurrency,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	url := fmt.Sprintf("http://%s/", netip.AddrPortFrom(b.server.IP, serverPort))
	var (
		ok, failed atomic.Int64
		firstErr   atomic.Value
		wg         sync.WaitGroup
	)
	measure := func(d time.Duration, count bool) {
		deadline := time.Now().Add(d)
		for w := 0; w < b.cfg.concurrency; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Now().Before(deadline) {
					resp, err := client.Get(url)
					if err == nil {
						_, err = io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
					}
					if !count {
						continue
					}
					if err != nil {
						failed.Add(1)
						firstErr.CompareAndSwap(nil, err)
						continue
					}
					ok.Add(1)
				}
			}()
		}
		wg.Wait()
	}
	measure(b.cfg.duration/10, false) // warm up: caches, conntrack, idle connections
	start, cpuStart := time.Now(), cpuTime()
	measure(b.cfg.duration, true)
	elapsed, cpu := time.Since(start), cpuTime()-cpuStart
	if n := failed.Load(); n > 0 {
		return sample{}, fmt.Errorf("%d requests failed, first: %v", n, firstErr.Load())
	}
	n := float64(ok.Load())
	return sample{rps: n / elapsed.Seconds(), cpuPerReq: float64(cpu.Microseconds()) / n}, nil
}

func (b *bench) attach(entries int) error {
	for id, ep := range map[uint32]*topology.Endpoint{1: b.client, 2: b.server} {
		cfg := bpf.EndpointConfig{ID: id, IfIndex: ep.HostIfIndex, IPv4: ep.IP}
		if err := b.node.NS.Do(func() error { return b.dp.AttachEndpoint(cfg) }); err != nil {
			return err
		}
	}
	if err := b.dp.ReplacePolicy(1, []bpf.PolicyEntry{{Direction: bpf.Egress}}); err != nil {
		return err
	}
	policy := []bpf.PolicyEntry{{Identity: idClient, Direction: bpf.Ingress, Protocol: bpf.ProtoTCP, Port: serverPort}}
	for i := 1; i < entries; i++ {
		policy = append(policy, bpf.PolicyEntry{Identity: uint32(100000 + i), Direction: bpf.Ingress, Protocol: bpf.ProtoTCP, Port: serverPort})
	}
	return b.dp.ReplacePolicy(2, policy)
}

func (b *bench) detach() error {
	return errors.Join(b.dp.DetachEndpoint(1), b.dp.DetachEndpoint(2))
}

// iptablesUp installs the allow the way iptables-based policy engines do: established flows first,
// then one rule per allowed peer, the one that matches last, then drop.
func (b *bench) iptablesUp() error {
	var rules strings.Builder
	fmt.Fprintf(&rules, "*filter\n:%s - [0:0]\n-A FORWARD -j %s\n", chainName, chainName)
	fmt.Fprintf(&rules, "-A %s -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n", chainName)
	for i := 1; i < b.cfg.iptablesRules; i++ {
		fmt.Fprintf(&rules, "-A %s -s 10.200.%d.%d/32 -d %s/32 -p tcp --dport %d -j ACCEPT\n", chainName, i/250, i%250+1, b.server.IP, serverPort)
	}
	fmt.Fprintf(&rules, "-A %s -s %s/32 -d %s/32 -p tcp --dport %d -j ACCEPT\n", chainName, b.client.IP, b.server.IP, serverPort)
	fmt.Fprintf(&rules, "-A %s -j DROP\nCOMMIT\n", chainName)
	cmd := exec.Command(b.iptables, "--noflush")
	cmd.Stdin = strings.NewReader(rules.String())
	if out, err := b.node.NS.Run(cmd); err != nil {
		return fmt.Errorf("iptables-restore: %v: %s", err, out)
	}
	return nil
}

// iptablesDown removes the jump and the chain; all of it lives in the node's namespace only.
func (b *bench) iptablesDown() error {
	cmd := exec.Command(b.iptables, "--noflush")
	cmd.Stdin = strings.NewReader(fmt.Sprintf("*filter\n-D FORWARD -j %s\n-F %s\n-X %s\nCOMMIT\n", chainName, chainName, chainName))
	if out, err := b.node.NS.Run(cmd); err != nil {
		return fmt.Errorf("iptables-restore (cleanup): %v: %s", err, out)
	}
	return nil
}
