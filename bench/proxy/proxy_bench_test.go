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
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/palisade-mesh/palisade/internal/demo"
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
const haproxyConfig = `global
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    option http-keep-alive
frontend deathstar
    bind :8080
    acl landing method POST
    acl landing_path path /v1/request-landing
    http-request deny deny_status 403 unless landing landing_path
    default_backend deathstar
backend deathstar
    server local 127.0.0.1:81
`

// concurrency is how many clients send requests at once (-args -concurrency N).
var concurrency = flag.Int("concurrency", 4, "concurrent clients")

const (
	warmup  = 500 * time.Millisecond
	measure = 3 * time.Second
)

type result struct {
	rps      float64
	p50, p99 time.Duration
	errors   int
}

// load sends POST /v1/request-landing from concurrency workers for the measure period.
func load(ns *topology.Namespace, url string, keepAlive bool) result {
	tr := &http.Transport{
		DisableKeepAlives:   !keepAlive,
		MaxIdleConnsPerHost: *concurrency,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return ns.DialContext(ctx, &net.Dialer{Timeout: 2 * time.Second}, network, addr)
		},
	}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	run := func(d time.Duration) ([]time.Duration, int) {
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
					resp, err := c.Post(url, "text/plain", nil)
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
	run(warmup)
	lats, errs := run(measure)
	slices.Sort(lats)
	r := result{rps: float64(len(lats)) / measure.Seconds(), errors: errs}
	if len(lats) > 0 {
		r.p50 = lats[len(lats)/2]
		r.p99 = lats[len(lats)*99/100]
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
	harness.ServeDeathstar(b, dsNS, "deathstar")
	ln, err := dsNS.Listen("tcp4", ":81")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: demo.DeathstarHandler("deathstar"), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	b.Cleanup(func() { srv.Close() })

	cfg := filepath.Join(b.TempDir(), "haproxy.cfg")
	if err := os.WriteFile(cfg, []byte(haproxyConfig), 0o644); err != nil {
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
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := check.Head("http://" + ds.IPv4 + "/v1/request-landing")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusForbidden {
				resp, err = check.Head("http://" + ds.IPv4 + ":8080/v1/request-landing")
				if err == nil && resp.StatusCode == http.StatusForbidden {
					resp.Body.Close()
					break
				}
			}
		}
		if time.Now().After(deadline) {
			b.Fatalf("the proxy and HAProxy do not enforce the rule: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}

	targets := []struct{ name, url string }{
		{"direct", "http://" + ds.IPv4 + ":81/v1/request-landing"},
		{"proxy", "http://" + ds.IPv4 + ":80/v1/request-landing"},
		{"haproxy", "http://" + ds.IPv4 + ":8080/v1/request-landing"},
	}
	var table strings.Builder
	table.WriteString("| connections | path | req/s | ratio to direct | p50 | p99 | p99 added |\n| --- | --- | --- | --- | --- | --- | --- |\n")
	b.ResetTimer()
	for _, keepAlive := range []bool{true, false} {
		mode := "keep-alive"
		if !keepAlive {
			mode = "per-request"
		}
		var direct result
		for _, tg := range targets {
			r := load(clientNS, tg.url, keepAlive)
			if r.errors > 0 || r.rps == 0 {
				b.Errorf("%s %s: %d errors, %.0f req/s", mode, tg.name, r.errors, r.rps)
			}
			if tg.name == "direct" {
				direct = r
			}
			b.ReportMetric(r.rps, fmt.Sprintf("%s-%s-req/s", mode, tg.name))
			b.ReportMetric(float64(r.p99.Microseconds()), fmt.Sprintf("%s-%s-p99-µs", mode, tg.name))
			fmt.Fprintf(&table, "| %s | %s | %.0f | %.2f | %s | %s | %s |\n", mode, tg.name, r.rps, r.rps/direct.rps,
				r.p50.Round(time.Microsecond), r.p99.Round(time.Microsecond), (r.p99 - direct.p99).Round(time.Microsecond))
		}
	}
	b.Logf("concurrency %d, %s per path after %s warm-up\n%s", *concurrency, measure, warmup, table.String())
}

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
