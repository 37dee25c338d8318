package proxy

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"sync"
	"time"

	"github.com/palisade-mesh/palisade/monitor"
)

// h2Preface opens every HTTP/2 connection (RFC 9113 3.4).
var h2Preface = []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")

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
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	srv := &http.Server{
		Handler:     handler,
		Protocols:   &protocols,
		IdleTimeout: ep.p.opts.IdleTimeout,
		BaseContext: func(net.Listener) context.Context { return ep.ctx },
		ErrorLog:    slog.NewLogLogger(ep.p.opts.Logger.Handler(), slog.LevelDebug),
	}
	ln := newOneConnListener(&bufferedConn{Conn: h.conn, r: h.br})
	stop := context.AfterFunc(ep.ctx, func() { srv.Close() })
	defer stop()
	_ = srv.Serve(ln)
}

// oneConnListener hands one connection to an http.Server, then reports itself closed once that
// connection is: Serve returns when the client is done.
type oneConnListener struct {
	conn *notifyConn
	once sync.Once
}

func newOneConnListener(c net.Conn) *oneConnListener {
	return &oneConnListener{conn: &notifyConn{Conn: c, closed: make(chan struct{})}}
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	first := false
	l.once.Do(func() { first = true })
	if first {
		return l.conn, nil
	}
	<-l.conn.closed
	return nil, net.ErrClosed
}

// Close does nothing: the connection is the server's to close.
func (l *oneConnListener) Close() error { return nil }

func (l *oneConnListener) Addr() net.Addr { return l.conn.LocalAddr() }

// notifyConn tells when the server closed it.
type notifyConn struct {
	net.Conn
	closeOnce sync.Once
	closed    chan struct{}
}

func (c *notifyConn) Close() error {
	err := c.Conn.Close()
	c.closeOnce.Do(func() { close(c.closed) })
	return err
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
func (ep *Endpoint) h2Transport() *http.Transport {
	ep.mu.Lock()
	defer ep.mu.Unlock()
	if ep.h2 == nil {
		var protocols http.Protocols
		protocols.SetUnencryptedHTTP2(true)
		ep.h2 = &http.Transport{
			Protocols: &protocols,
			DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
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
