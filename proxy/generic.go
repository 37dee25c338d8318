package proxy

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/palisade-mesh/palisade/monitor"
	"github.com/palisade-mesh/palisade/proxy/parser"
)

// maxParserBuffer bounds what one direction may hold while its parser asks for more.
const maxParserBuffer = 1 << 20

// genericConn runs a parser.Conn over one proxied connection.
type genericConn struct {
	*clientConn
	proto parser.Protocol
	up    net.Conn

	parseMu sync.Mutex // the parser sees one direction at a time
	pc      parser.Conn

	outMu     sync.Mutex
	client    *bufio.Writer
	server    *bufio.Writer
	forwarded int      // requests forwarded (End passes in the request direction)
	replied   int      // replies passed (End passes in the reply direction)
	pending   []inject // injections waiting for earlier replies
}

type inject struct {
	after int // replies that must have passed first
	data  []byte
}

func (ep *Endpoint) serveGeneric(cc *clientConn, name string) {
	proto, ok := parser.Lookup(name)
	if !ok {
		ep.p.opts.Logger.Warn("proxy: no parser for l7proto; closing", "endpoint", ep.id, "l7proto", name)
		cc.publish(monitor.VerdictDenied, fmt.Sprintf("no parser for l7proto %q", name), &monitor.L7{Protocol: name})
		return
	}
	up, err := ep.dialUpstream(cc.origDst)
	if err != nil {
		ep.p.opts.Logger.Warn("proxy upstream", "endpoint", ep.id, "error", err)
		return
	}
	defer up.conn.Close()
	g := &genericConn{clientConn: cc, proto: proto, up: up.conn,
		client: bufio.NewWriterSize(cc.conn, 16<<10), server: up.bw}
	g.pc = proto.NewConn(g)
	done := make(chan struct{})
	go func() {
		defer close(done)
		g.run(true, up.br)
		cc.conn.Close()
	}()
	g.run(false, cc.conn)
	// The client is done sending (its writing half is passed on): let the server finish its
	// replies, within the idle timeout.
	t := time.NewTimer(ep.p.opts.IdleTimeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	case <-ep.ctx.Done():
	}
	up.conn.Close()
	<-done
}

// Allow implements parser.Session.
func (g *genericConn) Allow(fields map[string]string) bool {
	d := g.decide()
	allowed := d.allowed && (d.l7 == nil || (d.l7.Parser == g.proto.Name && g.proto.MatchAny(d.l7.Generic, fields)))
	verdict, reason := monitor.VerdictAllowed, ""
	if !allowed {
		verdict, reason = monitor.VerdictDenied, "no L7 rule matches the request"
	}
	g.publish(verdict, reason, &monitor.L7{Protocol: g.proto.Name, Fields: fields})
	return allowed
}

// run parses one direction until it ends or fails; it closes the other side's writing half.
func (g *genericConn) run(reply bool, src io.Reader) {
	var (
		buf  []byte
		skip int  // bytes of an op larger than the buffer still to pass (>0) or drop (<0)
		end  bool // the pending op completes a request/reply
		tmp  = make([]byte, 32<<10)
	)
	dst := g.server
	if reply {
		dst = g.client
	}
	defer func() {
		if reply {
			closeWrite(g.conn)
		} else {
			closeWrite(g.up)
		}
	}()
	for {
		n, err := src.Read(tmp)
		data := tmp[:n]
		// Bytes of an op that reached past the buffer go without asking the parser again.
		if skip != 0 && len(data) > 0 {
			k := min(len(data), abs(skip))
			if skip > 0 {
				if werr := g.write(dst, data[:k]); werr != nil {
					return
				}
				skip -= k
			} else {
				skip += k
			}
			data = data[k:]
			if skip == 0 && end {
				g.completed(reply)
			}
		}
		buf = append(buf, data...)
		if skip == 0 {
			var ok bool
			if buf, skip, end, ok = g.parse(reply, buf, dst); !ok {
				g.conn.Close()
				g.up.Close()
				return
			}
		}
		// Injected replies go to the client whichever direction produced them.
		if ferr := errors.Join(g.flush(dst), g.flush(g.client)); ferr != nil {
			return
		}
		if err != nil {
			return
		}
		if len(buf) > maxParserBuffer {
			g.ep.p.opts.Logger.Debug("proxy: parser buffer limit; closing", "endpoint", g.ep.id, "protocol", g.proto.Name)
			g.conn.Close()
			g.up.Close()
			return
		}
	}
}

// parse feeds buf to the parser until it asks for more. It returns the unconsumed bytes and, when
// an op reaches past them, how much is left to pass (>0) or drop (<0).
func (g *genericConn) parse(reply bool, buf []byte, dst *bufio.Writer) (rest []byte, skip int, end, ok bool) {
	for len(buf) > 0 {
		g.parseMu.Lock()
		op := g.pc.OnData(reply, buf)
		g.parseMu.Unlock()
		switch op.Verdict {
		case parser.More:
			return buf, 0, false, true
		case parser.Pass, parser.Drop:
			if op.N <= 0 {
				g.ep.p.opts.Logger.Debug("proxy: parser returned an empty op", "protocol", g.proto.Name, "verdict", op.Verdict)
				return nil, 0, false, false
			}
			k := min(op.N, len(buf))
			if op.Verdict == parser.Pass {
				if err := g.write(dst, buf[:k]); err != nil {
					return nil, 0, false, false
				}
			}
			buf = buf[k:]
			if op.N > k {
				left := op.N - k
				if op.Verdict == parser.Drop {
					left = -left
				}
				return buf, left, op.End, true
			}
			if op.End {
				g.completed(reply)
			}
		case parser.Inject:
			if err := g.inject(reply, op.Inject); err != nil {
				return nil, 0, false, false
			}
		default:
			g.ep.p.opts.Logger.Debug("proxy: parser error; closing", "protocol", g.proto.Name, "error", op.Err)
			return nil, 0, false, false
		}
	}
	// Keep the buffer's memory only while it is small.
	if cap(buf) > 64<<10 {
		buf = nil
	}
	return buf[:0:cap(buf)], 0, false, true
}

func abs(n int) int {
	if n < 0 {
		return -n
	}
	return n
}

func (g *genericConn) write(w *bufio.Writer, p []byte) error {
	g.outMu.Lock()
	defer g.outMu.Unlock()
	_, err := w.Write(p)
	return err
}

func (g *genericConn) flush(w *bufio.Writer) error {
	g.outMu.Lock()
	defer g.outMu.Unlock()
	return w.Flush()
}

// completed counts a finished request or reply and releases injections that were waiting for it.
func (g *genericConn) completed(reply bool) {
	g.outMu.Lock()
	defer g.outMu.Unlock()
	if !reply {
		g.forwarded++
		return
	}
	g.replied++
	for len(g.pending) > 0 && g.pending[0].after <= g.replied {
		_, _ = g.client.Write(g.pending[0].data)
		g.pending = g.pending[1:]
	}
	_ = g.client.Flush()
}

// inject answers the side data came from. A reply to a request waits for the replies of the
// requests forwarded before it, so a pipelining client reads its answers in order.
func (g *genericConn) inject(reply bool, data []byte) error {
	g.outMu.Lock()
	defer g.outMu.Unlock()
	if reply {
		_, err := g.server.Write(data)
		return err
	}
	if g.forwarded > g.replied || len(g.pending) > 0 {
		g.pending = append(g.pending, inject{after: g.forwarded, data: append([]byte(nil), data...)})
		return nil
	}
	if _, err := g.client.Write(data); err != nil {
		return err
	}
	return nil
}
