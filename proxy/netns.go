package proxy

import (
	"context"
	"fmt"
	"net"

	"github.com/palisade-mesh/palisade/internal/netnsexec"
)

// Netns is a network namespace the proxy opens sockets in. A socket belongs to the namespace of
// the thread that created it, so both the listener and upstream dials are created on a thread
// that entered the namespace; once created they work from any thread.
type Netns struct {
	// Path of the namespace (e.g. /var/run/netns/x or /proc/<pid>/ns/net). Empty: the caller's.
	Path string
}

// do runs fn on a locked OS thread inside the namespace.
func (n Netns) do(fn func() error) error { return netnsexec.Do(n.Path, fn) }

// Listen opens a plain TCP (never MPTCP: the datapath's SOCKHASH refuses MPTCP sockets) listener
// in the namespace.
func (n Netns) Listen(ctx context.Context, addr string) (*net.TCPListener, error) {
	var ln net.Listener
	err := n.do(func() error {
		var lc net.ListenConfig
		lc.SetMultipathTCP(false)
		var err error
		ln, err = lc.Listen(ctx, "tcp4", addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen on %s in %s: %w", addr, n.describe(), err)
	}
	return ln.(*net.TCPListener), nil
}

// Dial connects to addr from inside the namespace.
func (n Netns) Dial(ctx context.Context, addr string) (net.Conn, error) {
	var c net.Conn
	err := n.do(func() error {
		d := net.Dialer{}
		d.SetMultipathTCP(false)
		var err error
		c, err = d.DialContext(ctx, "tcp4", addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("dial %s in %s: %w", addr, n.describe(), err)
	}
	return c, nil
}

func (n Netns) describe() string {
	if n.Path == "" {
		return "the current network namespace"
	}
	return "network namespace " + n.Path
}
