package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"testing"

	"github.com/palisade-mesh/palisade/monitor"
)

// BenchmarkHTTP_KeepAlive measures one keep-alive connection's request/response round trip on
// loopback, direct to the server and through the proxy with an allow rule (the proxy's own cost,
// without the datapath's redirect; bench/proxy measures the whole path).
func BenchmarkHTTP_KeepAlive(b *testing.B) {
	// The access log goes to a monitor hub as in the agent (collecting every event in the test's
	// slice would make the benchmark measure that slice's growth).
	hub := monitor.NewHub()
	tp, up := newStarwarsProxy(b, Options{Publish: hub.Publish})
	for _, target := range []struct{ name, addr, src string }{
		{"direct", up.addr, "127.0.0.11"},
		{"proxy", tp.ln.Addr().String(), "127.0.0.11"},
	} {
		b.Run(target.name, func(b *testing.B) {
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(target.src)}}
			c, err := d.Dial("tcp", target.addr)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			br := bufio.NewReader(c)
			const req = "POST /v1/request-landing HTTP/1.1\r\nHost: deathstar\r\nContent-Length: 0\r\n\r\n"
			b.ReportAllocs()
			for b.Loop() {
				if _, err := io.WriteString(c, req); err != nil {
					b.Fatal(err)
				}
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					b.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					b.Fatal(resp.Status)
				}
			}
		})
	}
}
