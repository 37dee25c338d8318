package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"

	"github.com/vishvananda/netns"
)

// Netns is a network namespace the proxy opens sockets in. A socket belongs to the namespace of
// the thread that created it, so both the listener and upstream dials are created on a thread
// that entered the namespace; once created they work from any thread.
type Netns struct {
	// Path of the namespace (e.g. /var/run/netns/x or /proc/<pid>/ns/net). Empty: the caller's.
	Path string
}

// do runs fn on a locked OS thread inside the namespace.
func (n Netns) do(fn func() error) error {
	if n.Path == "" {
		return fn()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("get current network namespace: %w", err)
			return
		}
		defer orig.Close()
		target, err := netns.GetFromPath(n.Path)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open network namespace %s: %w", n.Path, err)
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter network namespace %s: %w", n.Path, err)
			return
		}
		fnErr := fn()
		if err := netns.Set(orig); err != nil {
			// The thread stays locked: the runtime discards it when this goroutine ends.
			errc <- errors.Join(fnErr, fmt.Errorf("leave network namespace %s: %w", n.Path, err))
			return
		}
		runtime.UnlockOSThread()
		errc <- fnErr
	}()
	return <-errc
}

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
