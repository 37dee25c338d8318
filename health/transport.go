package health

import (
	"fmt"
	"log"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// countingTransport is memberlist's UDP/TCP transport with a count of the bytes this member
// sends, which is the gossip cost per node (metric and benchmarks).
type countingTransport struct {
	inner       *memberlist.NetTransport
	packetBytes atomic.Uint64
	streamBytes atomic.Uint64
	streams     chan net.Conn
	stop        chan struct{}
	done        chan struct{}
	shutdown    sync.Once
}

func newCountingTransport(addr string, port int, logger *log.Logger) (*countingTransport, error) {
	inner, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{BindAddrs: []string{addr}, BindPort: port, Logger: logger})
	if err != nil {
		return nil, fmt.Errorf("listen for gossip on %s:%d: %w", addr, port, err)
	}
	t := &countingTransport{inner: inner, streams: make(chan net.Conn), stop: make(chan struct{}), done: make(chan struct{})}
	go t.forwardStreams()
	return t, nil
}

// port is the bound port (the kernel's choice when 0 was asked for).
func (t *countingTransport) port() int { return t.inner.GetAutoBindPort() }

func (t *countingTransport) forwardStreams() {
	defer close(t.done)
	for {
		select {
		case <-t.stop:
			return
		case c := <-t.inner.StreamCh():
			select {
			case t.streams <- &countingConn{Conn: c, n: &t.streamBytes}:
			case <-t.stop:
				c.Close()
				return
			}
		}
	}
}

func (t *countingTransport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	if port == 0 {
		port = t.port()
	}
	return t.inner.FinalAdvertiseAddr(ip, port)
}

func (t *countingTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	ts, err := t.inner.WriteTo(b, addr)
	if err == nil {
		t.packetBytes.Add(uint64(len(b)))
	}
	return ts, err
}

func (t *countingTransport) PacketCh() <-chan *memberlist.Packet { return t.inner.PacketCh() }

func (t *countingTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	c, err := t.inner.DialTimeout(addr, timeout)
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: c, n: &t.streamBytes}, nil
}

func (t *countingTransport) StreamCh() <-chan net.Conn { return t.streams }

func (t *countingTransport) Shutdown() error {
	var err error
	t.shutdown.Do(func() {
		close(t.stop)
		<-t.done
		err = t.inner.Shutdown()
	})
	return err
}

type countingConn struct {
	net.Conn
	n *atomic.Uint64
}

func (c *countingConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.n.Add(uint64(n))
	return n, err
}

// SentBytes is what this member has sent so far: UDP packets (probes, gossip) and TCP streams
// (push/pull state exchanges, joins, fallback probes), IP and UDP/TCP headers excluded.
func (h *Health) SentBytes() (packets, streams uint64) {
	return h.transport.packetBytes.Load(), h.transport.streamBytes.Load()
}
