package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"time"

	"golang.org/x/net/http2"

	"github.com/palisade-mesh/palisade/monitor"
)

var h2Preface = []byte(http2.ClientPreface)

// isH2C reports whether the client opened with the HTTP/2 prior-knowledge preface (gRPC without
// TLS). It reads no more than the preface and returns as soon as the bytes differ from it.
func isH2C(br *bufio.Reader) bool {
	for n := 1; n <= len(h2Preface); {
		b, err := br.Peek(n)
		if !bytes.HasPrefix(h2Preface, b) {
			return false
		}
		if err != nil {
			return false
		}
		if len(b) == len(h2Preface) {
			return true
		}
		n = max(len(b)+1, min(br.Buffered(), len(h2Preface)))
	}
	return false
}

// bufferedConn is a net.Conn whose reads start with what a bufio.Reader already holds.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// serveH2C serves an HTTP/2 cleartext connection: each stream is judged like an HTTP/1 request
// (gRPC rules name the path /package.Service/Method) and allowed ones are proxied over the
// endpoint's pooled HTTP/2 upstream connections.
func (h *httpConn) serveH2C() {
	ep := h.ep
	_ = h.conn.SetReadDeadline(time.Time{})
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = h.origDst
			pr.Out.Host = pr.In.Host
		},
		Transport:     ep.h2Transport(),
		FlushInterval: -1, // streams (gRPC) are relayed as they come
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			ep.p.opts.Logger.Debug("proxy h2c upstream", "endpoint", ep.id, "error", err)
			w.WriteHeader(http.StatusBadGateway)
		},
	}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		if err := checkPath(r); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			h.log(r, http.StatusBadRequest, monitor.VerdictDenied, start, err.Error())
			return
		}
		if !h.allowed(r) {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.WriteHeader(http.StatusForbidden)
			_, _ = io.WriteString(w, deniedBody)
			h.log(r, http.StatusForbidden, monitor.VerdictDenied, start, "no L7 rule matches the request")
			return
		}
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		rp.ServeHTTP(sw, r)
		h.log(r, sw.status, monitor.VerdictAllowed, start, "")
	})
	srv := &http2.Server{IdleTimeout: ep.p.opts.IdleTimeout, MaxReadFrameSize: 1 << 20}
	srv.ServeConn(&bufferedConn{Conn: h.conn, r: h.br}, &http2.ServeConnOpts{Context: ep.ctx, Handler: handler})
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

// Flush lets the reverse proxy stream through the wrapper.
func (s *statusWriter) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// h2Transport returns the endpoint's HTTP/2 cleartext client, which pools one multiplexed
// connection per upstream address; its dials happen inside the endpoint's namespace.
func (ep *Endpoint) h2Transport() *http2.Transport {
	ep.mu.Lock()
	defer ep.mu.Unlock()
	if ep.h2 == nil {
		ep.h2 = &http2.Transport{
			AllowHTTP: true,
			DialTLSContext: func(ctx context.Context, _, addr string, _ *tls.Config) (net.Conn, error) {
				ctx, cancel := context.WithTimeout(ctx, ep.p.opts.DialTimeout)
				defer cancel()
				if ep.upstreamOverride != "" {
					addr = ep.upstreamOverride
				}
				return ep.netns.Dial(ctx, addr)
			},
		}
	}
	return ep.h2
}
