package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/palisade-mesh/palisade/monitor"
	"github.com/palisade-mesh/palisade/policy"
)

// deniedBody is what a denied HTTP request gets, as Cilium answers.
const deniedBody = "Access denied\r\n"

var (
	readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 16<<10) }}
	writerPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 16<<10) }}
)

// limitReader bounds what the header parser may read from the client; the limit is lifted while a
// body streams.
type limitReader struct {
	r io.Reader
	n int64 // < 0: unlimited
}

var errHeaderTooLarge = errors.New("request header too large")

func (l *limitReader) Read(p []byte) (int, error) {
	if l.n < 0 {
		return l.r.Read(p)
	}
	if l.n == 0 {
		return 0, errHeaderTooLarge
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	return n, err
}

// httpConn is the state of one proxied HTTP/1.x client connection.
type httpConn struct {
	*clientConn
	lr *limitReader
	br *bufio.Reader
	bw *bufio.Writer
	up *upstream // upstream connection in use by this client, returned to the pool at the end
	h2 bool      // served as HTTP/2 cleartext
	// deadline: a read deadline is set on the client connection.
	deadline bool
}

func (ep *Endpoint) serveHTTP(cc *clientConn) {
	sock := newSockIO(cc.conn)
	h := &httpConn{clientConn: cc, lr: &limitReader{r: sock, n: -1}}
	h.br = readerPool.Get().(*bufio.Reader)
	h.br.Reset(h.lr)
	h.bw = writerPool.Get().(*bufio.Writer)
	h.bw.Reset(sock)
	defer func() {
		if h.up != nil {
			ep.putUpstream(h.up)
		}
		if h.h2 {
			return // the HTTP/2 server's reader may still hold h.br
		}
		// A connection per request is common: reuse the buffers rather than allocate 32 KiB each.
		h.br.Reset(nil)
		h.bw.Reset(nil)
		readerPool.Put(h.br)
		writerPool.Put(h.bw)
	}()
	h.setReadDeadline(time.Now().Add(ep.p.opts.HeaderTimeout))
	if isH2C(h.br) {
		h.h2 = true
		h.serveH2C()
		return
	}
	for h.serveOne() {
	}
}

// serveOne handles one request and reports whether the connection stays open.
func (h *httpConn) serveOne() bool {
	opts := h.ep.p.opts
	if h.bw.Buffered() > 0 && !h.headerBuffered() {
		// Responses held back for a pipelined request go out before waiting for the rest of it.
		if err := h.bw.Flush(); err != nil {
			return false
		}
	}
	// Deadlines are runtime timers: set only those a read can run into. The common request
	// arrives whole, so after the idle wait its header is parsed from the buffer without reading.
	if h.br.Buffered() == 0 {
		h.setReadDeadline(time.Now().Add(opts.IdleTimeout))
		if _, err := h.br.Peek(1); err != nil {
			return false
		}
	}
	if !h.headerBuffered() {
		h.setReadDeadline(time.Now().Add(opts.HeaderTimeout))
	}
	h.lr.n = int64(opts.MaxHeaderBytes)
	start := time.Now()
	req, err := http.ReadRequest(h.br)
	if err != nil && h.lr.n == 0 {
		// bufio hands a line cut by the limit to the parser without the limit's error.
		err = errHeaderTooLarge
	}
	h.lr.n = -1
	if h.deadline && (err != nil || readsMore(req)) {
		// Bodies and tunnels stream without a deadline; a bodiless request reads nothing more
		// before the next one sets its own.
		h.setReadDeadline(time.Time{})
	}
	if err == nil {
		err = checkRequest(req)
	}
	if err != nil {
		status := http.StatusBadRequest
		switch {
		case errors.Is(err, errHeaderTooLarge):
			status = http.StatusRequestHeaderFieldsTooLarge
		case errors.Is(err, os.ErrDeadlineExceeded):
			status = http.StatusRequestTimeout
		case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed):
			return false
		}
		h.writeError(status, true)
		h.log(nil, status, monitor.VerdictDenied, start, err.Error())
		return false
	}
	if !h.allowed(req) {
		return h.deny(req, start)
	}
	return h.forward(req, start)
}

// setReadDeadline sets the client connection's read deadline (zero: none) and remembers whether
// one is set.
func (h *httpConn) setReadDeadline(t time.Time) {
	_ = h.conn.SetReadDeadline(t)
	h.deadline = !t.IsZero()
}

// readsMore reports whether handling req reads from the client beyond its header: a body (to
// forward or drain) or an upgrade's tunnel.
func readsMore(req *http.Request) bool {
	return req.Body != http.NoBody || req.Header.Get("Upgrade") != ""
}

// headerBuffered reports whether a whole request header is already buffered.
func (h *httpConn) headerBuffered() bool {
	b, _ := h.br.Peek(h.br.Buffered())
	return bytes.Contains(b, []byte("\r\n\r\n"))
}

// checkRequest refuses what a front-end and the upstream server could read differently (request
// smuggling) and what the proxy cannot forward faithfully.
func checkRequest(req *http.Request) error {
	// net/http already refuses differing Content-Lengths and unknown transfer codings, and lets
	// chunked override Content-Length (dropping it); the proxy re-frames every body it forwards,
	// so the upstream server reads exactly the requests the proxy judged.
	for name := range req.Header {
		if !validHeaderName(name) {
			return fmt.Errorf("invalid header name %q", name)
		}
	}
	if req.ProtoMajor != 1 {
		return fmt.Errorf("unsupported protocol %s", req.Proto)
	}
	if req.Method == http.MethodConnect {
		return errors.New("CONNECT is not proxied")
	}
	return checkPath(req)
}

// checkPath refuses dot-segments, encoded or not: rules match the path as sent, and a server that
// resolves them would serve another path than the one judged ("/public/../admin").
func checkPath(req *http.Request) error {
	if p := req.URL.Path; strings.Contains(p+"/", "/../") || strings.Contains(p+"/", "/./") {
		return fmt.Errorf("dot-segment in path %q", p)
	}
	return nil
}

// validHeaderName reports whether name is an RFC 9110 token.
func validHeaderName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte("\"(),/:;<=>?@[\\]{}", c) >= 0 {
			return false
		}
	}
	return true
}

// allowed matches the request against the rules of the connection's source identity now.
func (h *httpConn) allowed(req *http.Request) bool {
	d := h.decide()
	switch {
	case !d.allowed:
		return false
	case d.l7 == nil:
		return true
	case d.l7.Parser != policy.ParserHTTP:
		return false
	}
	hr := policy.HTTPRequest{Method: req.Method, Path: requestPath(req), Host: req.Host}
	for _, rule := range d.l7.HTTP {
		if len(rule.Headers) > 0 && hr.Headers == nil {
			hr.Headers = make(map[string]string, len(req.Header))
			for k, v := range req.Header {
				hr.Headers[k] = v[0]
			}
		}
		if rule.Matches(hr) {
			return true
		}
	}
	return false
}

// requestPath is the request target as the client sent it (path and query), what Cilium's path
// rules match.
func requestPath(req *http.Request) string {
	if strings.HasPrefix(req.RequestURI, "/") {
		return req.RequestURI
	}
	return req.URL.RequestURI()
}

func (h *httpConn) deny(req *http.Request, start time.Time) bool {
	keep := !req.Close
	if req.Body != nil && req.Body != http.NoBody {
		if expectsContinue(req) {
			// The client waits before sending its body: answering now and closing never reads it.
			keep = false
		} else if n, err := io.CopyN(io.Discard, req.Body, h.ep.p.opts.MaxDrainBytes+1); err == nil || n > h.ep.p.opts.MaxDrainBytes {
			keep = false
		} else if !errors.Is(err, io.EOF) {
			keep = false
		}
	}
	var b strings.Builder
	b.WriteString("HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain; charset=utf-8\r\n")
	fmt.Fprintf(&b, "Content-Length: %d\r\n", len(deniedBody))
	switch {
	case !keep:
		b.WriteString("Connection: close\r\n")
	case req.ProtoMinor == 0:
		b.WriteString("Connection: keep-alive\r\n")
	}
	b.WriteString("\r\n" + deniedBody)
	_, _ = h.bw.WriteString(b.String())
	err := h.flush()
	h.log(req, http.StatusForbidden, monitor.VerdictDenied, start, "no L7 rule matches the request")
	return keep && err == nil
}

func expectsContinue(req *http.Request) bool {
	return strings.EqualFold(req.Header.Get("Expect"), "100-continue")
}

// flush writes buffered responses unless more pipelined requests are already waiting: their
// responses go out together.
func (h *httpConn) flush() error {
	if h.br.Buffered() > 0 {
		return nil
	}
	return h.bw.Flush()
}

func (h *httpConn) writeError(status int, closeConn bool) {
	text := http.StatusText(status)
	conn := ""
	if closeConn {
		conn = "Connection: close\r\n"
	}
	fmt.Fprintf(h.bw, "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n%s\r\n%s\r\n", status, text, len(text)+2, conn, text)
	_ = h.bw.Flush()
}

// hopHeaders are per-connection headers a proxy must not forward (RFC 9110 7.6.1).
var hopHeaders = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Proxy-Authorization", "Te", "Trailer", "Upgrade"}

func removeHopHeaders(hd http.Header) {
	for _, f := range hd.Values("Connection") {
		for _, name := range strings.Split(f, ",") {
			if name = strings.TrimSpace(name); name != "" {
				hd.Del(name)
			}
		}
	}
	for _, name := range hopHeaders {
		hd.Del(name)
	}
}

func isUpgrade(hd http.Header) (string, bool) {
	for _, f := range hd.Values("Connection") {
		for _, name := range strings.Split(f, ",") {
			if strings.EqualFold(strings.TrimSpace(name), "upgrade") {
				up := hd.Get("Upgrade")
				return up, up != ""
			}
		}
	}
	return "", false
}

// forward sends an allowed request upstream and its response back.
func (h *httpConn) forward(req *http.Request, start time.Time) bool {
	clientClose := req.Close
	upgrade, isUp := isUpgrade(req.Header)
	if expectsContinue(req) {
		// Answer the client's expectation here: the request is allowed, so its body may come.
		req.Header.Del("Expect")
		if req.ProtoAtLeast(1, 1) {
			_, _ = h.bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
			if err := h.bw.Flush(); err != nil {
				return false
			}
		}
	}
	if isUp && strings.EqualFold(upgrade, "h2c") {
		// An upgrade to HTTP/2 would tunnel requests the proxy never sees: serve this one as
		// HTTP/1.1 (clients that want h2c use prior knowledge, which the proxy parses).
		isUp = false
		req.Header.Del("Http2-Settings")
	}
	removeHopHeaders(req.Header)
	if isUp {
		req.Header.Set("Connection", "Upgrade")
		req.Header.Set("Upgrade", upgrade)
	}
	if req.Header.Values("User-Agent") == nil {
		req.Header["User-Agent"] = []string{""} // keep net/http from adding its own
	}
	req.Close = false

	resp, err := h.roundTrip(req)
	if err != nil {
		h.ep.p.opts.Logger.Debug("proxy upstream", "endpoint", h.ep.id, "error", err)
		h.writeError(http.StatusBadGateway, true)
		h.log(req, http.StatusBadGateway, monitor.VerdictAllowed, start, err.Error())
		return false
	}
	if resp.StatusCode == http.StatusSwitchingProtocols && isUp {
		h.log(req, resp.StatusCode, monitor.VerdictAllowed, start, "")
		h.tunnel(resp)
		return false
	}
	upstreamClose := resp.Close
	keep := !clientClose
	removeHopHeaders(resp.Header)
	switch {
	case req.ProtoMinor == 0 && (resp.ContentLength < 0 || len(resp.TransferEncoding) > 0):
		// An HTTP/1.0 client does not read chunked bodies: send it raw and close to end it.
		resp.TransferEncoding = nil
		resp.ContentLength = -1
		keep = false
	case resp.ContentLength < 0 && len(resp.TransferEncoding) == 0 && bodyAllowed(req, resp):
		// The upstream ends this body by closing: so must the proxy.
		keep = false
	}
	resp.Close = !keep
	if keep && req.ProtoMinor == 0 {
		resp.Header.Set("Connection", "keep-alive")
	}
	werr := resp.Write(h.bw)
	if werr == nil {
		werr = h.flush()
	}
	resp.Body.Close()
	h.log(req, resp.StatusCode, monitor.VerdictAllowed, start, "")
	if werr != nil || upstreamClose {
		// A failed or closing upstream is not reused; a client write error ends the connection.
		h.up.conn.Close()
		h.up = nil
		if werr != nil {
			return false
		}
	}
	return keep
}

// bodyAllowed reports whether a response may carry a body (RFC 9112 6.3).
func bodyAllowed(req *http.Request, resp *http.Response) bool {
	return req.Method != http.MethodHead && resp.StatusCode >= 200 &&
		resp.StatusCode != http.StatusNoContent && resp.StatusCode != http.StatusNotModified
}

// roundTrip writes the request to the upstream and reads the response headers, skipping interim
// 1xx responses. A pooled connection that turns out dead is replaced once for bodiless requests.
func (h *httpConn) roundTrip(req *http.Request) (*http.Response, error) {
	for attempt := 0; ; attempt++ {
		reused := h.up != nil
		if h.up == nil {
			up, err := h.ep.getUpstream(h.origDst)
			if err != nil {
				return nil, err
			}
			h.up = up
		}
		resp, err := h.tryRoundTrip(req)
		if err == nil {
			return resp, nil
		}
		h.up.conn.Close()
		h.up = nil
		if !reused || attempt > 0 || (req.Body != nil && req.Body != http.NoBody) {
			return nil, err
		}
	}
}

func (h *httpConn) tryRoundTrip(req *http.Request) (*http.Response, error) {
	if err := req.Write(h.up.bw); err != nil {
		return nil, fmt.Errorf("write request upstream: %w", err)
	}
	if err := h.up.bw.Flush(); err != nil {
		return nil, fmt.Errorf("write request upstream: %w", err)
	}
	for {
		resp, err := http.ReadResponse(h.up.br, req)
		if err != nil {
			return nil, fmt.Errorf("read upstream response: %w", err)
		}
		if resp.StatusCode >= 100 && resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols {
			continue // interim responses: the proxy answered the client's expectation itself
		}
		return resp, nil
	}
}

// tunnel hands an upgraded connection (websocket) over to a byte pipe in both directions.
func (h *httpConn) tunnel(resp *http.Response) {
	fmt.Fprintf(h.bw, "HTTP/1.1 101 %s\r\n", http.StatusText(http.StatusSwitchingProtocols))
	_ = resp.Header.Write(h.bw)
	_, _ = h.bw.WriteString("\r\n")
	if err := h.bw.Flush(); err != nil {
		return
	}
	up := h.up
	h.up = nil
	defer up.conn.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = io.Copy(up.conn, h.br)
		closeWrite(up.conn)
	}()
	_, _ = io.Copy(h.conn, up.br)
	closeWrite(h.conn)
	<-done
}

func (h *httpConn) log(req *http.Request, status int, verdict monitor.Verdict, start time.Time, reason string) {
	l7 := &monitor.L7{Protocol: policy.ParserHTTP, Status: status, Latency: time.Since(start)}
	if req != nil {
		l7.Method, l7.Host, l7.Path = req.Method, req.Host, requestPath(req)
	}
	h.publish(verdict, reason, l7)
}

func (cc *clientConn) publish(verdict monitor.Verdict, reason string, l7 *monitor.L7) {
	cc.ep.p.opts.Publish(monitor.Event{
		Time:      time.Now(),
		Type:      monitor.TypeL7,
		Verdict:   verdict,
		Reason:    reason,
		Direction: "ingress",
		Protocol:  "TCP",
		Source:    monitor.Peer{Identity: cc.srcID, Addr: cc.srcAddr},
		Dest:      monitor.Peer{Identity: cc.ep.identity.Load(), Endpoint: uint16(cc.ep.id), Addr: cc.dstAddr},
		L7:        l7,
	})
}

func addrPort(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		ap := ta.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return netip.AddrPort{}
}
