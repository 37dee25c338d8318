package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/palisade-mesh/palisade/monitor"
	_ "github.com/palisade-mesh/palisade/proxy/parser/r2d2"
)

const r2d2Policy = `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: r2d2
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
        l7proto: r2d2
        l7:
%s`

const (
	r2d2ReadOnly = "        - cmd: READ\n          file: \"/public/.*\"\n"
	r2d2AllowAll = "        - {}\n"
)

// r2d2Server answers every request line with "OK <line>", slowly for READ /slow so that a
// pipelining client's injected ERRORs would overtake it if the proxy did not keep them in order.
type r2d2Server struct {
	addr string
	port int
	mu   sync.Mutex
	got  []string
}

func startR2D2Server(t testing.TB) *r2d2Server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &r2d2Server{addr: ln.Addr().String(), port: ln.Addr().(*net.TCPAddr).Port}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					line := strings.TrimSuffix(sc.Text(), "\r")
					s.mu.Lock()
					s.got = append(s.got, line)
					s.mu.Unlock()
					if strings.HasSuffix(line, "/slow") {
						time.Sleep(100 * time.Millisecond)
					}
					if _, err := fmt.Fprintf(c, "OK %s\r\n", line); err != nil {
						return
					}
				}
			}()
		}
	}()
	return s
}

func (s *r2d2Server) received() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.got...)
}

func TestR2D2_ReadOnlyThroughTheProxyInOrder(t *testing.T) {
	srv := startR2D2Server(t)
	tp := newTestProxy(t, Options{}, mapStateFor(t, fmt.Sprintf(r2d2Policy, srv.port, r2d2ReadOnly)), srv.addr)
	c := tp.dialFrom(t, "127.0.0.11")
	// Pipelined: the denied WRITE's ERROR must come after the slow READ's reply.
	if _, err := io.WriteString(c, "READ /public/slow\r\nWRITE /public/x\r\nREAD /public/y\r\nHALT\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var replies []string
	for range 4 {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("after %q: %v", replies, err)
		}
		replies = append(replies, strings.TrimSpace(line))
	}
	if got, want := strings.Join(replies, "|"), "OK READ /public/slow|ERROR|OK READ /public/y|ERROR"; got != want {
		t.Fatalf("replies %s, want %s", got, want)
	}
	if got := strings.Join(srv.received(), "|"); got != "READ /public/slow|READ /public/y" {
		t.Fatalf("server received %s", got)
	}
	tp.events.waitFor(t, "denied WRITE", func(ev monitor.Event) bool {
		return ev.L7 != nil && ev.L7.Protocol == "r2d2" && ev.L7.Fields["cmd"] == "WRITE" && ev.Verdict == monitor.VerdictDenied && ev.Source.Identity == idTiefighter
	})

	// A request that does not parse closes the connection; nothing of it reaches the server.
	if _, err := io.WriteString(c, "FORMAT /\r\n"); err != nil {
		t.Fatal(err)
	}
	if _, err := br.ReadString('\n'); err == nil {
		t.Fatal("connection still answers after a malformed request")
	}
	if n := len(srv.received()); n != 2 {
		t.Fatalf("server received %d requests", n)
	}
}

func TestR2D2_AllowAllPassesEverythingWithVisibility(t *testing.T) {
	srv := startR2D2Server(t)
	tp := newTestProxy(t, Options{}, mapStateFor(t, fmt.Sprintf(r2d2Policy, srv.port, r2d2AllowAll)), srv.addr)
	c := tp.dialFrom(t, "127.0.0.11")
	br := bufio.NewReader(c)
	for _, req := range []string{"WRITE /etc/motd", "HALT", "RESET", "read /x"} {
		fmt.Fprintf(c, "%s\r\n", req)
		line, err := br.ReadString('\n')
		if err != nil || strings.TrimSpace(line) != "OK "+req {
			t.Fatalf("%s: %q %v", req, line, err)
		}
	}
	tp.events.waitFor(t, "allowed RESET", func(ev monitor.Event) bool {
		return ev.L7 != nil && ev.L7.Fields["cmd"] == "RESET" && ev.Verdict == monitor.VerdictAllowed
	})
}

// A client that half-closes after its last request still gets the replies.
func TestR2D2_HalfCloseStillGetsReplies(t *testing.T) {
	srv := startR2D2Server(t)
	tp := newTestProxy(t, Options{}, mapStateFor(t, fmt.Sprintf(r2d2Policy, srv.port, r2d2ReadOnly)), srv.addr)
	c := tp.dialFrom(t, "127.0.0.11")
	if _, err := io.WriteString(c, "READ /public/slow\r\nWRITE /x\r\n"); err != nil {
		t.Fatal(err)
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "OK READ /public/slow\r\nERROR\r\n" {
		t.Fatalf("replies %q, %v", got, err)
	}
}
