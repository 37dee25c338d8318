package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/palisade-mesh/palisade/internal/demo"
	"github.com/palisade-mesh/palisade/monitor"
)

const starwarsL7 = `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: deathstar-l7
  namespace: default
spec:
  endpointSelector:
    matchLabels: {org: empire, class: deathstar}
  ingress:
  - fromEndpoints:
    - matchLabels: {org: empire, class: tiefighter}
    toPorts:
    - ports: [{port: "%[1]d", protocol: TCP}]
      rules:
        http:
        - method: POST
          path: /v1/request-landing
        - method: POST
          path: /upload
        - method: GET
          path: /ws
        - method: GET
          path: /v1/eof-body
        - method: GET
          path: /v1/echo-upgrade
  - fromEndpoints:
    - matchLabels: {org: empire, class: maintenance-droid}
    toPorts:
    - ports: [{port: "%[1]d", protocol: TCP}]
      rules:
        http:
        - method: PUT
          path: /v1/exhaust-port
`

// upstreamServer is a real net/http server on loopback: the deathstar plus an /upload handler
// that counts the body it received.
type upstreamServer struct {
	addr     string
	port     int
	requests chan string // method and path of every request the server got
	close    func()
}

func startUpstream(t testing.TB) *upstreamServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &upstreamServer{addr: ln.Addr().String(), port: ln.Addr().(*net.TCPAddr).Port, requests: make(chan string, 1000)}
	mux := http.NewServeMux()
	mux.Handle("/v1/", demo.DeathstarHandler("deathstar"))
	mux.HandleFunc("GET /ws", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "websocket" {
			http.Error(w, "upgrade required", http.StatusUpgradeRequired)
			return
		}
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		_ = brw.Flush()
		_, _ = io.Copy(c, brw) // echo
	})
	mux.HandleFunc("GET /v1/echo-upgrade", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "upgrade=%q settings=%q", r.Header.Get("Upgrade"), r.Header.Get("Http2-Settings"))
	})
	mux.HandleFunc("GET /v1/eof-body", func(w http.ResponseWriter, r *http.Request) {
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = brw.WriteString("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end")
		_ = brw.Flush()
	})
	mux.HandleFunc("POST /upload", func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "got %d bytes\n", n)
	})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case u.requests <- r.Method + " " + r.URL.Path:
		default:
		}
		mux.ServeHTTP(w, r)
	})}
	go func() { _ = srv.Serve(ln) }()
	u.close = func() { srv.Close() }
	t.Cleanup(u.close)
	return u
}

func (u *upstreamServer) received() []string {
	var out []string
	for {
		select {
		case r := <-u.requests:
			out = append(out, r)
		default:
			return out
		}
	}
}

func newStarwarsProxy(t testing.TB, opts Options) (*testProxy, *upstreamServer) {
	up := startUpstream(t)
	ms := mapStateFor(t, fmt.Sprintf(starwarsL7, up.port))
	return newTestProxy(t, opts, ms, up.addr), up
}

// roundTrip writes raw bytes and reads one response.
func roundTrip(t *testing.T, c net.Conn, br *bufio.Reader, raw string) (*http.Response, string) {
	t.Helper()
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	return readResponse(t, br, "")
}

func readResponse(t *testing.T, br *bufio.Reader, method string) (*http.Response, string) {
	t.Helper()
	var req *http.Request
	if method != "" {
		req = &http.Request{Method: method}
	}
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(body)
}

func TestHTTP_StarWarsVerdictsPerRequestOnOneConnection(t *testing.T) {
	tp, up := newStarwarsProxy(t, Options{})
	c := tp.dialFrom(t, "127.0.0.11") // tiefighter
	br := bufio.NewReader(c)

	resp, body := roundTrip(t, c, br, "POST /v1/request-landing HTTP/1.1\r\nHost: deathstar\r\nContent-Length: 0\r\n\r\n")
	if resp.StatusCode != 200 || body != "Ship landed\n" {
		t.Fatalf("landing: %d %q", resp.StatusCode, body)
	}
	resp, body = roundTrip(t, c, br, "PUT /v1/exhaust-port HTTP/1.1\r\nHost: deathstar\r\nContent-Length: 4\r\n\r\nboom")
	if resp.StatusCode != http.StatusForbidden || body != "Access denied\r\n" {
		t.Fatalf("exhaust port from tiefighter: %d %q", resp.StatusCode, body)
	}
	// The connection stays usable after a denial.
	resp, body = roundTrip(t, c, br, "POST /v1/request-landing HTTP/1.1\r\nHost: deathstar\r\nContent-Length: 0\r\n\r\n")
	if resp.StatusCode != 200 || body != "Ship landed\n" {
		t.Fatalf("landing after denial: %d %q", resp.StatusCode, body)
	}
	if got := up.received(); strings.Join(got, ",") != "POST /v1/request-landing,POST /v1/request-landing" {
		t.Fatalf("server received %v: the denied request must not be forwarded", got)
	}
	ev := tp.events.waitFor(t, "denied PUT", func(ev monitor.Event) bool {
		return ev.L7 != nil && ev.L7.Method == "PUT" && ev.Verdict == monitor.VerdictDenied
	})
	if ev.Type != monitor.TypeL7 || ev.L7.Status != 403 || ev.L7.Path != "/v1/exhaust-port" || ev.L7.Host != "deathstar" ||
		ev.Source.Identity != idTiefighter || ev.Dest.Identity != idServer || ev.Dest.Endpoint != 7 {
		t.Fatalf("access log event %+v %+v", ev, ev.L7)
	}

	droid := tp.dialFrom(t, "127.0.0.12")
	resp, body = roundTrip(t, droid, bufio.NewReader(droid), "PUT /v1/exhaust-port HTTP/1.1\r\nHost: deathstar\r\nContent-Length: 0\r\n\r\n")
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, "exploded") {
		t.Fatalf("droid's PUT: %d %q", resp.StatusCode, body)
	}
}

// A source no rule names (the datapath would not have redirected it; policy changed since) is
// not served at all.
func TestHTTP_SourceWithoutRulesIsNotServed(t *testing.T) {
	tp, up := newStarwarsProxy(t, Options{})
	c := tp.dialFrom(t, "127.0.0.99")
	if _, err := io.WriteString(c, "POST /v1/request-landing HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if n, err := c.Read(make([]byte, 100)); err == nil {
		t.Fatalf("got %d bytes of answer", n)
	}
	if got := up.received(); len(got) != 0 {
		t.Fatalf("forwarded %v", got)
	}
}

func TestHTTP_PipelinedRequestsAnsweredInOrder(t *testing.T) {
	tp, up := newStarwarsProxy(t, Options{})
	c := tp.dialFrom(t, "127.0.0.11")
	br := bufio.NewReader(c)
	landing := "POST /v1/request-landing HTTP/1.1\r\nHost: d\r\nContent-Length: 0\r\n\r\n"
	denied := "PUT /v1/exhaust-port HTTP/1.1\r\nHost: d\r\nContent-Length: 0\r\n\r\n"
	if _, err := io.WriteString(c, landing+denied+landing+denied); err != nil {
		t.Fatal(err)
	}
	for i, want := range []int{200, 403, 200, 403} {
		resp, _ := readResponse(t, br, "")
		if resp.StatusCode != want {
			t.Fatalf("response %d: status %d, want %d", i, resp.StatusCode, want)
		}
	}
	if n := len(up.received()); n != 2 {
		t.Fatalf("server got %d requests, want 2", n)
	}
}

func TestHTTP_ChunkedAndLargeBodiesStream(t *testing.T) {
	tp, _ := newStarwarsProxy(t, Options{})
	c := tp.dialFrom(t, "127.0.0.11")
	br := bufio.NewReader(c)
	resp, body := roundTrip(t, c, br, "POST /upload HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
	if resp.StatusCode != 200 || body != "got 11 bytes\n" {
		t.Fatalf("chunked upload: %d %q", resp.StatusCode, body)
	}
	// 64 MiB: far more than any buffer of the proxy.
	const size = 64 << 20
	go func() {
		fmt.Fprintf(c, "POST /upload HTTP/1.1\r\nHost: d\r\nContent-Length: %d\r\n\r\n", size)
		_, _ = io.CopyN(c, zeroReader{}, size)
	}()
	resp, body = readResponse(t, br, "")
	if resp.StatusCode != 200 || body != fmt.Sprintf("got %d bytes\n", size) {
		t.Fatalf("large upload: %d %q", resp.StatusCode, body)
	}
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

func TestHTTP_ExpectContinue(t *testing.T) {
	tp, up := newStarwarsProxy(t, Options{})
	c := tp.dialFrom(t, "127.0.0.11")
	br := bufio.NewReader(c)
	// Allowed: the proxy answers 100 Continue, then the body goes through.
	if _, err := io.WriteString(c, "POST /upload HTTP/1.1\r\nHost: d\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	line, err := br.ReadString('\n')
	if err != nil || line != "HTTP/1.1 100 Continue\r\n" {
		t.Fatalf("interim response %q, %v", line, err)
	}
	if _, err := br.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	resp, body := roundTrip(t, c, br, "abc")
	if resp.StatusCode != 200 || body != "got 3 bytes\n" {
		t.Fatalf("after continue: %d %q", resp.StatusCode, body)
	}
	// Denied: 403 straight away, no 100, and the body is never read (connection closed).
	resp, body = roundTrip(t, c, br, "PUT /v1/exhaust-port HTTP/1.1\r\nHost: d\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
	if resp.StatusCode != 403 || body != deniedBody || !resp.Close {
		t.Fatalf("denied with expect: %d %q close=%v", resp.StatusCode, body, resp.Close)
	}
	if got := up.received(); len(got) != 1 {
		t.Fatalf("server got %v", got)
	}
}

func TestHTTP_HTTP10KeepAliveAndClose(t *testing.T) {
	tp, _ := newStarwarsProxy(t, Options{})
	c := tp.dialFrom(t, "127.0.0.11")
	br := bufio.NewReader(c)
	for range 2 {
		resp, body := roundTrip(t, c, br, "POST /v1/request-landing HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n")
		if resp.StatusCode != 200 || body != "Ship landed\n" || resp.Close {
			t.Fatalf("1.0 keep-alive: %d %q close=%v", resp.StatusCode, body, resp.Close)
		}
	}
	resp, _ := roundTrip(t, c, br, "POST /v1/request-landing HTTP/1.0\r\nContent-Length: 0\r\n\r\n")
	if resp.StatusCode != 200 {
		t.Fatalf("1.0: %d", resp.StatusCode)
	}
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if n, err := br.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("HTTP/1.0 without keep-alive: connection not closed (%d, %v)", n, err)
	}
}

func TestHTTP_MalformedAndSmugglingGet400AndClose(t *testing.T) {
	for _, tc := range []struct{ name, raw string }{
		{"garbage", "HELLO\r\n\r\n"},
		{"two content lengths", "POST /v1/request-landing HTTP/1.1\r\nHost: d\r\nContent-Length: 0\r\nContent-Length: 5\r\n\r\n"},
		{"bad transfer encoding", "POST /v1/request-landing HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: gzip, chunked, identity\r\n\r\n"},
		{"space in header name", "POST /v1/request-landing HTTP/1.1\r\nHost: d\r\nBad Header: x\r\n\r\n"},
		{"dot segments", "POST /v1/request-landing/../exhaust-port HTTP/1.1\r\nHost: d\r\n\r\n"},
		{"encoded dot segments", "POST /v1/request-landing/%2e%2e/exhaust-port HTTP/1.1\r\nHost: d\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tp, up := newStarwarsProxy(t, Options{})
			c := tp.dialFrom(t, "127.0.0.11")
			br := bufio.NewReader(c)
			resp, _ := roundTrip(t, c, br, tc.raw)
			if resp.StatusCode != http.StatusBadRequest || !resp.Close {
				t.Fatalf("status %d close=%v, want 400 and close", resp.StatusCode, resp.Close)
			}
			_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
			if _, err := br.ReadByte(); err != io.EOF {
				t.Fatalf("connection still open after 400: %v", err)
			}
			if got := up.received(); len(got) != 0 {
				t.Fatalf("malformed request forwarded: %v", got)
			}
		})
	}
}

// A request with both Content-Length and chunked framing is read as chunked (RFC 9112 6.3): what
// follows the last chunk is a request of its own, judged on its own, and the upstream gets the
// first request re-framed, so it cannot read the smuggled one.
func TestHTTP_SmuggledRequestIsJudgedOnItsOwn(t *testing.T) {
	tp, up := newStarwarsProxy(t, Options{})
	c := tp.dialFrom(t, "127.0.0.11")
	br := bufio.NewReader(c)
	if _, err := io.WriteString(c, "POST /v1/request-landing HTTP/1.1\r\nHost: d\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nPUT /v1/exhaust-port HTTP/1.1\r\nHost: d\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	for i, want := range []int{200, 403} {
		if resp, _ := readResponse(t, br, ""); resp.StatusCode != want {
			t.Fatalf("response %d: %d, want %d", i, resp.StatusCode, want)
		}
	}
	if got := up.received(); strings.Join(got, ",") != "POST /v1/request-landing" {
		t.Fatalf("server received %v", got)
	}
}

func TestHTTP_HeaderFloodAndSlowloris(t *testing.T) {
	tp, up := newStarwarsProxy(t, Options{HeaderTimeout: 300 * time.Millisecond, MaxHeaderBytes: 4 << 10})
	flood := tp.dialFrom(t, "127.0.0.11")
	go func() {
		_, _ = io.WriteString(flood, "POST /v1/request-landing HTTP/1.1\r\nHost: d\r\n")
		for i := 0; i < 10000; i++ {
			if _, err := fmt.Fprintf(flood, "X-Flood-%d: %s\r\n", i, strings.Repeat("a", 100)); err != nil {
				return
			}
		}
	}()
	resp, _ := readResponse(t, bufio.NewReader(flood), "")
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("header flood: %d", resp.StatusCode)
	}

	slow := tp.dialFrom(t, "127.0.0.11")
	if _, err := io.WriteString(slow, "POST /v1/request-landing HTTP/1.1\r\n"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	resp, _ = readResponse(t, bufio.NewReader(slow), "")
	if resp.StatusCode != http.StatusRequestTimeout || time.Since(start) > 3*time.Second {
		t.Fatalf("slowloris: %d after %v", resp.StatusCode, time.Since(start))
	}
	if got := up.received(); len(got) != 0 {
		t.Fatalf("forwarded %v", got)
	}
}

// The proxy sets read deadlines only where a read can run into them: a slow header on a kept-alive
// connection still times out, and a stale idle deadline never cuts a later body.
func TestHTTP_DeadlinesOnKeptAliveConnection(t *testing.T) {
	tp, _ := newStarwarsProxy(t, Options{HeaderTimeout: 300 * time.Millisecond, IdleTimeout: 300 * time.Millisecond})
	const landing = "POST /v1/request-landing HTTP/1.1\r\nHost: d\r\nContent-Length: 0\r\n\r\n"

	slow := tp.dialFrom(t, "127.0.0.11")
	br := bufio.NewReader(slow)
	if resp, _ := roundTrip(t, slow, br, landing); resp.StatusCode != http.StatusOK {
		t.Fatalf("first request: %d", resp.StatusCode)
	}
	if _, err := io.WriteString(slow, "POST /v1/request-landing HTTP/1.1\r\n"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if resp, _ := readResponse(t, br, ""); resp.StatusCode != http.StatusRequestTimeout || time.Since(start) > 3*time.Second {
		t.Fatalf("slow second header: %d after %v", resp.StatusCode, time.Since(start))
	}

	c := tp.dialFrom(t, "127.0.0.11")
	br = bufio.NewReader(c)
	if resp, _ := roundTrip(t, c, br, landing); resp.StatusCode != http.StatusOK {
		t.Fatalf("first request: %d", resp.StatusCode)
	}
	// A body that takes longer than the idle timeout, sent in one write after the header.
	if _, err := io.WriteString(c, "POST /upload HTTP/1.1\r\nHost: d\r\nContent-Length: 5\r\n\r\nhe"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(600 * time.Millisecond)
	if _, err := io.WriteString(c, "llo"); err != nil {
		t.Fatal(err)
	}
	if resp, body := readResponse(t, br, ""); resp.StatusCode != http.StatusOK || body != "got 5 bytes\n" {
		t.Fatalf("slow body after a bodiless request: %d %q", resp.StatusCode, body)
	}
}

func TestHTTP_ClientClosesMidBody(t *testing.T) {
	tp, _ := newStarwarsProxy(t, Options{})
	c := tp.dialFrom(t, "127.0.0.11")
	if _, err := io.WriteString(c, "POST /upload HTTP/1.1\r\nHost: d\r\nContent-Length: 100000\r\n\r\npartial"); err != nil {
		t.Fatal(err)
	}
	c.Close()
	// The proxy's connection goroutines end on their own.
	deadline := time.Now().Add(5 * time.Second)
	for {
		tp.ep.mu.Lock()
		n := len(tp.ep.conns)
		tp.ep.mu.Unlock()
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d proxied connections still open after the client left", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestHTTP_PolicyChangeAppliesToNextRequest(t *testing.T) {
	tp, up := newStarwarsProxy(t, Options{})
	c := tp.dialFrom(t, "127.0.0.11")
	br := bufio.NewReader(c)
	resp, _ := roundTrip(t, c, br, "PUT /v1/exhaust-port HTTP/1.1\r\nHost: d\r\nContent-Length: 0\r\n\r\n")
	if resp.StatusCode != 403 {
		t.Fatalf("before: %d", resp.StatusCode)
	}
	open := strings.Replace(fmt.Sprintf(starwarsL7, up.port), "method: POST\n          path: /v1/request-landing", "method: PUT\n          path: /v1/exhaust-port", 1)
	tp.ep.SetPolicy(mapStateFor(t, open))
	resp, _ = roundTrip(t, c, br, "PUT /v1/exhaust-port HTTP/1.1\r\nHost: d\r\nContent-Length: 0\r\n\r\n")
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("after policy change: %d", resp.StatusCode)
	}
}

func TestHTTP_UpgradePassesOnlyWhenAllowed(t *testing.T) {
	tp, up := newStarwarsProxy(t, Options{})
	const upgrade = "GET /ws HTTP/1.1\r\nHost: d\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"

	droid := tp.dialFrom(t, "127.0.0.12")
	resp, body := roundTrip(t, droid, bufio.NewReader(droid), upgrade)
	if resp.StatusCode != 403 || body != deniedBody {
		t.Fatalf("droid's upgrade: %d %q", resp.StatusCode, body)
	}
	if got := up.received(); len(got) != 0 {
		t.Fatalf("denied upgrade forwarded: %v", got)
	}

	c := tp.dialFrom(t, "127.0.0.11")
	br := bufio.NewReader(c)
	if _, err := io.WriteString(c, upgrade); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("tiefighter's upgrade: %v %v", resp, err)
	}
	// After the switch the connection is a byte stream in both directions (no HTTP parsing).
	if _, err := io.WriteString(c, "PUT /v1/exhaust-port is just bytes now\n"); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	line, err := br.ReadString('\n')
	if err != nil || line != "PUT /v1/exhaust-port is just bytes now\n" {
		t.Fatalf("echo through the tunnel: %q %v", line, err)
	}
}

func TestHTTP_UpstreamConnectionsArePooledPerEndpoint(t *testing.T) {
	tp, _ := newStarwarsProxy(t, Options{})
	for range 3 {
		c := tp.dialFrom(t, "127.0.0.11")
		resp, _ := roundTrip(t, c, bufio.NewReader(c), "POST /v1/request-landing HTTP/1.1\r\nHost: d\r\nContent-Length: 0\r\n\r\n")
		if resp.StatusCode != 200 {
			t.Fatal(resp.Status)
		}
		c.Close()
		// Wait until the proxy has returned the upstream to the pool.
		waitIdle(t, tp.ep, 1)
	}
	if n := tp.ep.dials.Load(); n != 1 {
		t.Fatalf("three sequential client connections made %d upstream connections, want 1", n)
	}
}

func waitIdle(t *testing.T, ep *Endpoint, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		ep.mu.Lock()
		n := 0
		for _, ups := range ep.idle {
			n += len(ups)
		}
		ep.mu.Unlock()
		if n == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d idle upstream connections, want %d", n, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestProxy_CloseLeavesNoGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	up := startUpstream(t)
	ms := mapStateFor(t, fmt.Sprintf(starwarsL7, up.port))
	p, err := New(Options{SourceIdentity: func(netip.Addr) (uint32, bool) { return idTiefighter, true }})
	if err != nil {
		t.Fatal(err)
	}
	ep, err := p.Endpoint(EndpointConfig{ID: 1, Identity: idServer})
	if err != nil {
		t.Fatal(err)
	}
	ep.upstreamOverride = up.addr
	ep.SetPolicy(ms)
	ln, err := ep.Listen(1)
	if err != nil {
		t.Fatal(err)
	}
	// Open connections in every state: idle keep-alive, mid-headers, pooled upstream.
	var open []net.Conn
	for _, raw := range []string{"POST /v1/request-landing HTTP/1.1\r\nHost: d\r\nContent-Length: 0\r\n\r\n", "POST /v1/req", ""} {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		open = append(open, c)
		_, _ = io.WriteString(c, raw)
	}
	resp, err := http.ReadResponse(bufio.NewReader(open[0]), nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("%v %v", resp, err)
	}
	p.Close()
	for _, c := range open {
		c.Close()
	}
	up.close()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines before, %d after Close:\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestHTTP_BodyEndedByCloseClosesTheClient(t *testing.T) {
	tp, _ := newStarwarsProxy(t, Options{})
	c := tp.dialFrom(t, "127.0.0.11")
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	resp, body := roundTrip(t, c, bufio.NewReader(c), "GET /v1/eof-body HTTP/1.1\r\nHost: d\r\n\r\n")
	if resp.StatusCode != 200 || body != "until the end" {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
}

// A response is not held back waiting for a pipelined request that has not fully arrived.
func TestHTTP_PartialPipelinedRequestDoesNotHoldBackResponse(t *testing.T) {
	tp, _ := newStarwarsProxy(t, Options{})
	c := tp.dialFrom(t, "127.0.0.11")
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	br := bufio.NewReader(c)
	resp, _ := roundTrip(t, c, br, "POST /v1/request-landing HTTP/1.1\r\nHost: d\r\nContent-Length: 0\r\n\r\nPUT /v1/exh")
	if resp.StatusCode != 200 {
		t.Fatalf("first: %d", resp.StatusCode)
	}
	resp, _ = roundTrip(t, c, br, "aust-port HTTP/1.1\r\nHost: d\r\nContent-Length: 0\r\n\r\n")
	if resp.StatusCode != 403 {
		t.Fatalf("second: %d", resp.StatusCode)
	}
}

// An allowed request asking to upgrade to h2c goes upstream as plain HTTP/1.1: after a switch the
// proxy would see none of the HTTP/2 requests that follow.
func TestHTTP_NoUpgradeToH2C(t *testing.T) {
	tp, _ := newStarwarsProxy(t, Options{})
	c := tp.dialFrom(t, "127.0.0.11")
	resp, body := roundTrip(t, c, bufio.NewReader(c), "GET /v1/echo-upgrade HTTP/1.1\r\nHost: d\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")
	if resp.StatusCode != 200 || body != `upgrade="" settings=""` {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
}
