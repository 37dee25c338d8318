package proxy_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/palisade-mesh/palisade/internal/testenv"
	"github.com/palisade-mesh/palisade/kvstore/etcdtest"
	"github.com/palisade-mesh/palisade/monitor"
	"github.com/palisade-mesh/palisade/test/harness"
	"github.com/palisade-mesh/palisade/test/topology"
)

// serveTestApp serves a few httpbin-style routes on port 80 inside the namespace.
func serveTestApp(t *testing.T, ns *topology.Namespace) {
	t.Helper()
	ln, err := ns.Listen("tcp4", ":80")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status/200", func(http.ResponseWriter, *http.Request) {})
	mux.HandleFunc("GET /get", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintf(w, `{"url":%q}`+"\n", r.URL.String()) })
	mux.HandleFunc("GET /headers", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintf(w, "%v\n", r.Header) })
	mux.HandleFunc("POST /post", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, `{"data":%q}`+"\n", b)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
}

// curl runs curl in the namespace and returns one status code per URL (one connection, kept
// alive across the URLs).
func curl(t *testing.T, ns *topology.Namespace, args ...string) string {
	t.Helper()
	testenv.RequireBinary(t, "curl", "apt-get install curl")
	all := []string{"-s", "-w", "%{http_code} ", "--max-time", "3"}
	for _, a := range args {
		if strings.HasPrefix(a, "http://") {
			all = append(all, "-o", "/dev/null")
		}
		all = append(all, a)
	}
	out, _ := ns.Run(ns.Command(context.Background(), "curl", all...))
	return strings.TrimSpace(string(out))
}

// TestL7_TestAppWithCurl imports the test-app's L7 policy and checks it with curl; then kills the
// agent and checks that the restarted agent enforces the same rules again.
func TestL7_TestAppWithCurl(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireBinary(t, "curl", "apt-get install curl")
	dir := etcdtest.SocketDir(t)
	etcd := etcdtest.StartRestartable(t)
	kv := etcd.Endpoints()[1]
	topo := topology.NewForTest(t, topology.Options{})
	n1 := topo.MustAddNode(t, "n1")
	a1 := harness.StartAgent(t, n1, "cluster1", 1, kv, dir)
	appNS, clientNS := topo.MustAddNamespace(t, "app"), topo.MustAddNamespace(t, "client")
	app := a1.CreateEndpoint(t, appNS, "app=app", "--namespace", "test-app")
	a1.CreateEndpoint(t, clientNS, "app=client", "--namespace", "test-app")
	serveTestApp(t, appNS)
	base := "http://" + app.IPv4

	harness.ImportPolicy(t, kv, "../../examples/test-app/l7-http.yaml")
	check := func(when string) {
		t.Helper()
		harness.WaitFor(t, 20*time.Second, "the L7 policy "+when, func() bool {
			return curl(t, clientNS, base+"/headers") == "403"
		})
		if got := curl(t, clientNS, base+"/status/200", base+"/get", base+"/headers", base+"/get?x=1", base+"/status/404"); got != "200 200 403 403 403" {
			t.Fatalf("%s: GETs answered %q", when, got)
		}
		if got := curl(t, clientNS, "-X", "POST", "-d", "hello", base+"/post"); got != "200" {
			t.Fatalf("%s: POST /post answered %q", when, got)
		}
		if got := curl(t, clientNS, "-X", "PUT", "-d", "hello", base+"/post"); got != "403" {
			t.Fatalf("%s: PUT /post answered %q", when, got)
		}
	}
	check("after import")
	ports := proxyPorts(t, a1, app.ID)
	if len(ports) == 0 {
		t.Fatal("no proxy port in the endpoint's datapath policy")
	}

	a1.Stop(syscall.SIGKILL) // SIGKILL: the proxy's listeners die with it, redirected flows are refused
	if got := curl(t, clientNS, base+"/headers"); got == "200" {
		t.Fatal("a denied request passed while the agent was down")
	}
	a1.Start()
	check("after the agent restarted")
	// The restarted agent adopted the proxy ports its predecessor installed.
	if after := proxyPorts(t, a1, app.ID); !slices.Equal(after, ports) {
		t.Fatalf("proxy ports %v before the restart, %v after", ports, after)
	}
}

// proxyPorts reads the proxy ports of an endpoint's installed policy with `palisade bpf policy`.
func proxyPorts(t *testing.T, a *harness.Agent, id uint32) []uint16 {
	t.Helper()
	out, err := exec.Command(harness.Binary(t), "bpf", "policy", fmt.Sprint(id), "--pin-dir", a.PinDir, "-o", "json").CombinedOutput()
	if err != nil {
		t.Fatalf("palisade bpf policy: %v\n%s", err, out)
	}
	var entries []map[string]any
	if err := json.Unmarshal(out, &entries); err != nil {
		t.Fatalf("palisade bpf policy output %q: %v", out, err)
	}
	var ports []uint16
	for _, e := range entries {
		for k, v := range e {
			if strings.EqualFold(k, "proxyPort") {
				if f, ok := v.(float64); ok && f != 0 {
					ports = append(ports, uint16(f))
				}
			}
		}
	}
	slices.Sort(ports)
	return ports
}

// r2d2Server answers each r2d2 request line with "OK <line>" inside the namespace on port 9000.
func serveR2D2(t *testing.T, ns *topology.Namespace) {
	t.Helper()
	ln, err := ns.Listen("tcp4", ":9000")
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					if _, err := fmt.Fprintf(c, "OK %s\r\n", strings.TrimSuffix(sc.Text(), "\r")); err != nil {
						return
					}
				}
			}()
		}
	}()
}

// r2d2Session sends requests on one connection from the namespace and returns the replies.
func r2d2Session(ns *topology.Namespace, addr string, reqs ...string) ([]string, error) {
	c, err := ns.DialContext(context.Background(), &net.Dialer{Timeout: 2 * time.Second}, "tcp4", addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	br := bufio.NewReader(c)
	var out []string
	for _, r := range reqs {
		if _, err := fmt.Fprintf(c, "%s\r\n", r); err != nil {
			return out, err
		}
		line, err := br.ReadString('\n')
		if err != nil {
			return out, err
		}
		out = append(out, strings.TrimSpace(line))
	}
	return out, nil
}

// TestL7_R2D2Policies runs the examples/r2d2 policies: read-only, then allow-all.
func TestL7_R2D2Policies(t *testing.T) {
	testenv.RequireRoot(t)
	dir := etcdtest.SocketDir(t)
	etcd := etcdtest.StartRestartable(t)
	kv := etcd.Endpoints()[1]
	topo := topology.NewForTest(t, topology.Options{})
	n1 := topo.MustAddNode(t, "n1")
	a1 := harness.StartAgent(t, n1, "cluster1", 1, kv, dir)
	srvNS, cliNS := topo.MustAddNamespace(t, "r2d2s"), topo.MustAddNamespace(t, "r2d2c")
	srv := a1.CreateEndpoint(t, srvNS, "id=r2d2-server")
	cli := a1.CreateEndpoint(t, cliNS, "id=r2d2-client")
	serveR2D2(t, srvNS)
	addr := srv.IPv4 + ":9000"
	l7 := harness.WatchMonitor(t, a1, "--type", "l7")

	harness.ImportPolicy(t, kv, "../../examples/r2d2/read-only.json")
	reqs := []string{"READ /public/plans", "WRITE /public/plans", "READ /etc/shadow", "HALT", "read /public/x"}
	harness.WaitFor(t, 20*time.Second, "the read-only policy", func() bool {
		got, err := r2d2Session(cliNS, addr, reqs...)
		return err == nil && strings.Join(got, "|") == "OK READ /public/plans|ERROR|ERROR|ERROR|OK read /public/x"
	})
	// The monitor drops events for a subscriber that falls behind: keep the traffic coming.
	harness.WaitFor(t, 10*time.Second, "an r2d2 access-log event for the denied WRITE", func() bool {
		_, _ = r2d2Session(cliNS, addr, "WRITE /public/plans")
		return l7.Seen(func(ev monitor.Event) bool {
			return ev.Verdict == "denied" && ev.Source.Identity == cli.Identity && ev.L7 != nil && ev.L7.Protocol == "r2d2" && ev.L7.Fields["cmd"] == "WRITE"
		})
	})

	out, err := exec.Command(harness.Binary(t), "policy", "delete", "-f", "../../examples/r2d2/read-only.json", "--kvstore-endpoints", kv).CombinedOutput()
	if err != nil {
		t.Fatalf("policy delete: %v\n%s", err, out)
	}
	harness.ImportPolicy(t, kv, "../../examples/r2d2/allow-all.json")
	harness.WaitFor(t, 20*time.Second, "the allow-all policy", func() bool {
		got, err := r2d2Session(cliNS, addr, reqs...)
		return err == nil && strings.Join(got, "|") == "OK READ /public/plans|OK WRITE /public/plans|OK READ /etc/shadow|OK HALT|OK read /public/x"
	})
	// Only the proxy logs an allowed HALT: once it does, allow-all is in force (right after the
	// swap the endpoint briefly has no policy and traffic goes straight to the server).
	harness.WaitFor(t, 10*time.Second, "an allowed HALT in the access log", func() bool {
		_, _ = r2d2Session(cliNS, addr, "HALT")
		return l7.Seen(func(ev monitor.Event) bool {
			return ev.Verdict == "allowed" && ev.L7 != nil && ev.L7.Fields["cmd"] == "HALT"
		})
	})
	// Still parsed: a line that is not r2d2 closes the connection.
	if got, err := r2d2Session(cliNS, addr, "FORMAT C:"); err == nil {
		t.Fatalf("a malformed request got %q", got)
	}
}
