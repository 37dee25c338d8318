package proxybench

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/palisade-mesh/palisade/internal/testenv"
	"github.com/palisade-mesh/palisade/kvstore/etcdtest"
	"github.com/palisade-mesh/palisade/test/harness"
	"github.com/palisade-mesh/palisade/test/topology"
)

func TestMain(m *testing.M) {
	code := m.Run()
	harness.Cleanup()
	os.Exit(code)
}

// benchPolicy: port 80 only through the proxy with an allow rule; 81 (the same server) and 8080
// (HAProxy in front of it) allowed at L3/L4.
const benchPolicy = `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: proxy-bench
  namespace: default
spec:
  endpointSelector:
    matchLabels: {class: deathstar}
  ingress:
  - fromEndpoints:
    - matchLabels: {class: bench-client}
    toPorts:
    - ports: [{port: "80", protocol: TCP}]
      rules:
        http:
        - method: POST
          path: /v1/request-landing
  - fromEndpoints:
    - matchLabels: {class: bench-client}
    toPorts:
    - ports: [{port: "81", protocol: TCP}, {port: "8080", protocol: TCP}]
`

// haproxyConfig applies the same rule as benchPolicy: POST /v1/request-landing or 403.
// It runs with one thread per core (the proxy's GOMAXPROCS), keeps its server connections alive
// and reuses them across client connections, as a tuned deployment would.
const haproxyConfig = `global
    maxconn 4096
    nbthread %d
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    option http-keep-alive
    http-reuse always
frontend deathstar
    bind :8080
    acl landing method POST
    acl landing_path path /v1/request-landing
    http-request deny deny_status 403 unless landing landing_path
    default_backend deathstar
backend deathstar
    server local 127.0.0.1:81
`

var (
	// concurrency is how many clients send requests at once (-args -concurrency N), each on its
	// own connection, the same for every path.
	concurrency = flag.Int("concurrency", 4, "concurrent clients")
	// modes selects the connection modes measured (-args -modes keep-alive).
	modes = flag.String("modes", "keep-alive,per-request", "comma-separated connection modes: keep-alive, per-request")
)

// Each path gets the same total time, in rounds that take turns between the paths: the other
// work on the shared machine changes by the second, and taking turns spreads it evenly over the
// paths instead of favouring whichever ran in a quiet moment.
const (
	warmup = 500 * time.Millisecond
	slice  = time.Second
	rounds = 3
)

// loader sends POST /v1/request-landing to one path from concurrency workers, each with its own
// connection (keep-alive) or a new connection per request.
type loader struct {
	url    string
	tr     *http.Transport
	client *http.Client

	lats     []time.Duration
	errors   int
	cpu      []time.Duration // per process, summed over the slices
	busy     time.Duration   // machine CPU in use, summed over the slices
	total    time.Duration   // machine CPU available, summed over the slices
	measured time.Duration
}

func newLoader(ns *topology.Namespace, url string, keepAlive bool, procs int) *loader {
	tr := &http.Transport{
		DisableKeepAlives:   !keepAlive,
		MaxIdleConnsPerHost: *concurrency,
		MaxConnsPerHost:     *concurrency,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return ns.DialContext(ctx, &net.Dialer{Timeout: 2 * time.Second}, network, addr)
		},
	}
	return &loader{url: url, tr: tr, client: &http.Client{Transport: tr, Timeout: 5 * time.Second}, cpu: make([]time.Duration, procs)}
}

// run sends requests for d and returns their latencies and how many failed.
func (l *loader) run(d time.Duration) ([]time.Duration, int) {
	var (
		mu   sync.Mutex
		lats []time.Duration
		errs int
		wg   sync.WaitGroup
	)
	end := time.Now().Add(d)
	for range *concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			bad := 0
			for time.Now().Before(end) {
				start := time.Now()
				resp, err := l.client.Post(l.url, "text/plain", nil)
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				if err != nil {
					bad++
					continue
				}
				mine = append(mine, time.Since(start))
			}
			mu.Lock()
			lats = append(lats, mine...)
			errs += bad
			mu.Unlock()
		}()
	}
	wg.Wait()
	return lats, errs
}

// measure runs one slice and accounts its requests and the CPU time pids used meanwhile.
func (l *loader) measure(pids []int) error {
	before, err := sampleCPU(pids)
	if err != nil {
		return err
	}
	lats, errs := l.run(slice)
	after, err := sampleCPU(pids)
	if err != nil {
		return err
	}
	l.lats = append(l.lats, lats...)
	l.errors += errs
	for i := range pids {
		l.cpu[i] += after.procs[i] - before.procs[i]
	}
	l.busy += after.busy - before.busy
	l.total += after.total - before.total
	l.measured += slice
	return nil
}

type result struct {
	rps      float64
	p50, p99 time.Duration
	errors   int
	// cpu is the CPU time per request of each process (as passed to measure), busy the fraction
	// of the machine's CPU in use during the measurement.
	cpu  []time.Duration
	busy float64
}

func (l *loader) result() result {
	slices.Sort(l.lats)
	r := result{errors: l.errors, cpu: make([]time.Duration, len(l.cpu))}
	if n := len(l.lats); n > 0 {
		r.rps = float64(n) / l.measured.Seconds()
		r.p50, r.p99 = l.lats[n/2], l.lats[n*99/100]
		for i, d := range l.cpu {
			r.cpu[i] = d / time.Duration(n)
		}
	}
	if l.total > 0 {
		r.busy = float64(l.busy) / float64(l.total)
	}
	return r
}

func BenchmarkProxy(b *testing.B) {
	testenv.RequireRoot(b)
	testenv.RequireBinary(b, "haproxy", "apt-get install haproxy")
	dir := etcdtest.SocketDir(b)
	etcd := etcdtest.StartRestartable(b)
	kv := etcd.Endpoints()[1]
	topo := topology.NewForTest(b, topology.Options{})
	n1 := topo.MustAddNode(b, "n1")
	a1 := harness.StartAgent(b, n1, "cluster1", 1, kv, dir)

	dsNS, err := topo.AddNamespace("ds")
	if err != nil {
		b.Fatal(err)
	}
	clientNS, err := topo.AddNamespace("client")
	if err != nil {
		b.Fatal(err)
	}
	ds := createEndpoint(b, a1, dsNS, "org=empire,class=deathstar")
	createEndpoint(b, a1, clientNS, "class=bench-client")
	// The server runs in its own processes (one per port, the same program), as an endpoint's
	// workload does: sharing the client's Go runtime would let the direct path hand requests
	// between client and server goroutines on one thread, with no process wake-up at all, which
	// no deployment sees.
	servers := map[string]int{}
	for _, port := range []string{"80", "81"} {
		srv := dsNS.Command(context.Background(), harness.Binary(b), "dev", "serve-deathstar", "--listen", ":"+port)
		srv.Stdout, srv.Stderr = io.Discard, io.Discard
		if err := dsNS.Start(srv); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = srv.Process.Kill(); _ = srv.Wait() })
		servers[port] = srv.Process.Pid
	}
	cfg := filepath.Join(b.TempDir(), "haproxy.cfg")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(haproxyConfig, runtime.GOMAXPROCS(0))), 0o644); err != nil {
		b.Fatal(err)
	}
	hap := dsNS.Command(context.Background(), "haproxy", "-f", cfg, "-db")
	hap.Stdout, hap.Stderr = io.Discard, io.Discard
	if err := dsNS.Start(hap); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = hap.Process.Kill(); _ = hap.Wait() })

	pol := filepath.Join(b.TempDir(), "policy.yaml")
	if err := os.WriteFile(pol, []byte(benchPolicy), 0o644); err != nil {
		b.Fatal(err)
	}
	if out, err := exec.Command(harness.Binary(b), "policy", "import", "-f", pol, "--kvstore-endpoints", kv).CombinedOutput(); err != nil {
		b.Fatalf("policy import: %v\n%s", err, out)
	}
	check := harness.HTTPClient(clientNS, 2*time.Second)
	status := func(method, url string) int {
		req, _ := http.NewRequest(method, url, nil)
		resp, err := check.Do(req)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	// Ready when the proxy and HAProxy deny what the rule does not allow and every path serves.
	base := "http://" + ds.IPv4
	for deadline := time.Now().Add(20 * time.Second); ; {
		if status("HEAD", base+"/v1/request-landing") == http.StatusForbidden &&
			status("HEAD", base+":8080/v1/request-landing") == http.StatusForbidden &&
			status("POST", base+"/v1/request-landing") == http.StatusOK &&
			status("POST", base+":81/v1/request-landing") == http.StatusOK &&
			status("POST", base+":8080/v1/request-landing") == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			b.Fatal("the paths do not serve, or the proxy and HAProxy do not enforce the rule")
		}
		time.Sleep(200 * time.Millisecond)
	}

	// CPU accounting: the agent (its proxy), HAProxy, this process (the client) and the servers.
	agentPID, err := pidWithArg(a1.PinDir)
	if err != nil {
		b.Fatal(err)
	}
	pids := []int{agentPID, hap.Process.Pid, os.Getpid(), servers["80"], servers["81"]}

	targets := []struct{ name, url string }{
		{"direct", "http://" + ds.IPv4 + ":81/v1/request-landing"},
		{"proxy", "http://" + ds.IPv4 + ":80/v1/request-landing"},
		{"haproxy", "http://" + ds.IPv4 + ":8080/v1/request-landing"},
	}
	var table strings.Builder
	table.WriteString("| connections | path | req/s | ratio to direct | p50 | p99 | p99 added | agent CPU/req | haproxy CPU/req | client CPU/req | server CPU/req | machine busy |\n")
	table.WriteString("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
	b.ResetTimer()
	for _, mode := range strings.Split(*modes, ",") {
		var keepAlive bool
		switch mode {
		case "keep-alive":
			keepAlive = true
		case "per-request":
		default:
			b.Fatalf("unknown mode %q in -modes", mode)
		}
		loaders := make([]*loader, len(targets))
		for i, tg := range targets {
			loaders[i] = newLoader(clientNS, tg.url, keepAlive, len(pids))
			defer loaders[i].tr.CloseIdleConnections()
			loaders[i].run(warmup)
		}
		for range rounds {
			for _, l := range loaders {
				if err := l.measure(pids); err != nil {
					b.Fatal(err)
				}
			}
		}
		direct := loaders[0].result()
		for i, tg := range targets {
			r := loaders[i].result()
			if r.errors > 0 || r.rps == 0 {
				b.Errorf("%s %s: %d errors, %.0f req/s", mode, tg.name, r.errors, r.rps)
			}
			b.ReportMetric(r.rps, fmt.Sprintf("%s-%s-req/s", mode, tg.name))
			b.ReportMetric(float64(r.p99.Microseconds()), fmt.Sprintf("%s-%s-p99-µs", mode, tg.name))
			fmt.Fprintf(&table, "| %s | %s | %.0f | %.2f | %s | %s | %s | %.1fµs | %.1fµs | %.1fµs | %.1fµs | %.0f%% |\n", mode, tg.name, r.rps, r.rps/direct.rps,
				r.p50.Round(time.Microsecond), r.p99.Round(time.Microsecond), (r.p99 - direct.p99).Round(time.Microsecond),
				micros(r.cpu[0]), micros(r.cpu[1]), micros(r.cpu[2]), micros(r.cpu[3]+r.cpu[4]), 100*r.busy)
		}
	}
	b.Logf("concurrency %d, %d rounds of %s per path taking turns, after %s warm-up\n%s", *concurrency, rounds, slice, warmup, table.String())
}

func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

type createdEndpoint struct {
	IPv4     string `json:"ipv4"`
	Identity uint32 `json:"identity"`
}

func createEndpoint(t testing.TB, a *harness.Agent, ns *topology.Namespace, labels string) createdEndpoint {
	t.Helper()
	out, err := a.CLI("endpoint", "create", "--netns", ns.Path, "--labels", labels, "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var eps []createdEndpoint
	if err := jsonUnmarshal(out, &eps); err != nil || len(eps) != 1 {
		t.Fatalf("endpoint create output %q: %v", out, err)
	}
	return eps[0]
}
