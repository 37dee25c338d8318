package proxy

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"

	"github.com/palisade-mesh/palisade/internal/testenv"
	"github.com/palisade-mesh/palisade/monitor"
	_ "github.com/palisade-mesh/palisade/proxy/parser/memcached"
)

const memcachedPolicy = `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: cache
  namespace: default
spec:
  endpointSelector:
    matchLabels: {class: deathstar}
  ingress:
  - fromEndpoints:
    - matchLabels: {class: tiefighter}
    toPorts:
    - ports: [{port: "%d", protocol: TCP}]
      rules:
        l7proto: memcached
        l7:
        - command: readGroup
        - command: writeGroup
          keyPrefix: public/
`

// startMemcached runs Debian's memcached on a free loopback port until the test ends.
func startMemcached(t *testing.T) (addr string, port int) {
	t.Helper()
	testenv.RequireBinary(t, "memcached", "apt-get install memcached")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port = ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cmd := exec.Command("memcached", "-l", "127.0.0.1", "-p", fmt.Sprint(port), "-U", "0", "-u", "nobody", "-m", "64")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	addr = fmt.Sprintf("127.0.0.1:%d", port)
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return addr, port
		}
		if time.Now().After(deadline) {
			t.Fatalf("memcached did not start: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestMemcached_RealServerAndClientLibrary(t *testing.T) {
	addr, port := startMemcached(t)
	tp := newTestProxy(t, Options{}, mapStateFor(t, fmt.Sprintf(memcachedPolicy, port)), addr)
	direct := memcache.New(addr)

	if err := direct.Set(&memcache.Item{Key: "secret", Value: []byte("plans")}); err != nil {
		t.Fatal(err)
	}
	client := tiefighterClient(tp)
	if err := client.Set(&memcache.Item{Key: "public/landing", Value: []byte("bay 7")}); err != nil {
		t.Fatalf("allowed set: %v", err)
	}
	it, err := client.Get("public/landing")
	if err != nil || string(it.Value) != "bay 7" {
		t.Fatalf("get: %v %v", it, err)
	}
	it, err = client.Get("secret") // reads are allowed
	if err != nil || string(it.Value) != "plans" {
		t.Fatalf("get secret: %v %v", it, err)
	}
	if err := client.Set(&memcache.Item{Key: "secret", Value: []byte("stolen")}); err == nil {
		t.Fatal("denied set succeeded")
	}
	if err := client.Delete("secret"); err == nil {
		t.Fatal("denied delete succeeded")
	}
	if n, err := client.Increment("public/count", 1); !errors.Is(err, memcache.ErrCacheMiss) {
		t.Fatalf("incr of a missing allowed key: %d %v, want a cache miss from the server", n, err)
	}
	it, err = direct.Get("secret")
	if err != nil || string(it.Value) != "plans" {
		t.Fatalf("the denied writes reached the server: %v %v", it, err)
	}
	m, err := client.GetMulti([]string{"public/landing", "secret"})
	if err != nil || len(m) != 2 {
		t.Fatalf("get multi: %v %v", m, err)
	}
	tp.events.waitFor(t, "denied set", func(ev monitor.Event) bool {
		return ev.L7 != nil && ev.L7.Protocol == "memcached" && ev.L7.Fields["cmd"] == "set" && ev.L7.Fields["key"] == "secret" && ev.Verdict == monitor.VerdictDenied
	})
}

// tiefighterClient is a gomemcache client whose connections come from the tiefighter's address.
func tiefighterClient(tp *testProxy) *memcache.Client {
	mc := memcache.New(tp.ln.Addr().String())
	mc.Timeout = 2 * time.Second
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.11")}}
	mc.DialContext = d.DialContext
	return mc
}

func TestMemcached_PipelinedDeniedRepliesInOrder(t *testing.T) {
	addr, port := startMemcached(t)
	tp := newTestProxy(t, Options{}, mapStateFor(t, fmt.Sprintf(memcachedPolicy, port)), addr)
	c := tp.dialFrom(t, "127.0.0.11")
	if _, err := io.WriteString(c, "set public/a 0 0 2\r\nhi\r\nset secret 0 0 2\r\nno\r\nget public/a secret\r\ndelete secret noreply\r\ndelete public/a\r\nversion\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var lines []string
	for len(lines) < 6 {
		l, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("after %q: %v", lines, err)
		}
		lines = append(lines, strings.TrimSpace(l))
	}
	want := "STORED|CLIENT_ERROR access denied|VALUE public/a 0 2|hi|END|DELETED"
	if got := strings.Join(lines, "|"); got != want {
		t.Fatalf("replies %s\nwant    %s", got, want)
	}
	if l, _ := br.ReadString('\n'); !strings.HasPrefix(l, "CLIENT_ERROR") {
		t.Fatalf("version (not in the policy) got %q", l)
	}
}
