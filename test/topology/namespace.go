package topology

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/palisade-mesh/palisade/internal/netnsexec"
)

// netnsDir is where named namespaces are bind-mounted (the iproute2 convention).
const netnsDir = "/var/run/netns"

// Namespace is a named network namespace the topology created.
type Namespace struct {
	// Name is the namespace's name under /var/run/netns (usable with `ip netns exec`).
	Name string
	// Path is the bind mount that keeps the namespace alive.
	Path string

	mu    sync.Mutex
	procs []*exec.Cmd
}

// createNamespace makes a new named namespace with loopback up and IPv6 off (no neighbour
// discovery noise in tests that count packets or events).
func createNamespace(name string) (*Namespace, error) {
	ns := &Namespace{Name: name, Path: filepath.Join(netnsDir, name)}
	errc := make(chan error, 1)
	go func() {
		// The thread ends up in the new namespace: keep it locked so the runtime discards it when
		// this goroutine returns instead of reusing it elsewhere.
		runtime.LockOSThread()
		h, err := netns.NewNamed(name)
		if err != nil {
			errc <- fmt.Errorf("create network namespace %s: %w", name, err)
			return
		}
		h.Close()
		errc <- ns.setup()
	}()
	if err := <-errc; err != nil {
		_ = netns.DeleteNamed(name)
		return nil, err
	}
	return ns, nil
}

// setup runs on a thread inside the namespace.
func (ns *Namespace) setup() error {
	for path, value := range map[string]string{
		"/proc/sys/net/ipv6/conf/all/disable_ipv6":     "1",
		"/proc/sys/net/ipv6/conf/default/disable_ipv6": "1",
	} {
		if err := os.WriteFile(path, []byte(value), 0o644); err != nil {
			return fmt.Errorf("namespace %s: write %s: %w", ns.Name, path, err)
		}
	}
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("namespace %s: find lo: %w", ns.Name, err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return fmt.Errorf("namespace %s: set lo up: %w", ns.Name, err)
	}
	return nil
}

// Do runs fn on an OS thread that is inside the namespace and returns its error. fn runs on
// another goroutine: it must not call t.FailNow (t.Fatal) but return an error instead.
func (ns *Namespace) Do(fn func() error) error { return netnsexec.Do(ns.Path, fn) }

// Handle returns a netlink handle bound to the namespace; close it when done.
func (ns *Namespace) Handle() (*netlink.Handle, error) {
	h, err := netns.GetFromPath(ns.Path)
	if err != nil {
		return nil, fmt.Errorf("open network namespace %s: %w", ns.Name, err)
	}
	defer h.Close()
	nh, err := netlink.NewHandleAt(h)
	if err != nil {
		return nil, fmt.Errorf("netlink handle in %s: %w", ns.Name, err)
	}
	return nh, nil
}

// Sysctl writes a sysctl (dotted name, e.g. "net.ipv4.ip_forward") inside the namespace.
func (ns *Namespace) Sysctl(name, value string) error {
	path := "/proc/sys/" + strings.ReplaceAll(name, ".", "/")
	return ns.Do(func() error {
		if err := os.WriteFile(path, []byte(value), 0o644); err != nil {
			return fmt.Errorf("namespace %s: sysctl %s=%s: %w", ns.Name, name, value, err)
		}
		return nil
	})
}

// Listen opens a listener inside the namespace. TCP listeners are plain TCP, never MPTCP, so they
// can go into a SOCKHASH.
func (ns *Namespace) Listen(network, address string) (net.Listener, error) {
	var ln net.Listener
	err := ns.Do(func() error {
		var lc net.ListenConfig
		lc.SetMultipathTCP(false)
		var err error
		ln, err = lc.Listen(context.Background(), network, address)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen on %s %s in %s: %w", network, address, ns.Name, err)
	}
	return ln, nil
}

// ListenPacket opens a packet listener (UDP) inside the namespace.
func (ns *Namespace) ListenPacket(network, address string) (net.PacketConn, error) {
	var pc net.PacketConn
	err := ns.Do(func() error {
		var err error
		pc, err = net.ListenPacket(network, address)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen on %s %s in %s: %w", network, address, ns.Name, err)
	}
	return pc, nil
}

// DialContext connects from inside the namespace using d (nil: a zero Dialer). The dial itself
// runs on a thread in the namespace; the connection can be used anywhere.
func (ns *Namespace) DialContext(ctx context.Context, d *net.Dialer, network, address string) (net.Conn, error) {
	if d == nil {
		d = &net.Dialer{}
	}
	var conn net.Conn
	err := ns.Do(func() error {
		var err error
		conn, err = d.DialContext(ctx, network, address)
		return err
	})
	return conn, err
}

// DialTimeout connects from inside the namespace, giving up after timeout.
func (ns *Namespace) DialTimeout(network, address string, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return ns.DialContext(ctx, nil, network, address)
}

// Command returns a command that runs inside the namespace through `ip netns exec` semantics
// without needing iproute2: Start it with Namespace.Start. The topology kills processes still
// running when it is closed; callers should Wait for the ones they start.
func (ns *Namespace) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, name, args...)
}

// Start starts cmd inside the namespace: the child is forked from a thread that is in it.
func (ns *Namespace) Start(cmd *exec.Cmd) error {
	err := ns.Do(cmd.Start)
	if err != nil {
		return fmt.Errorf("start %s in %s: %w", cmd.Path, ns.Name, err)
	}
	ns.mu.Lock()
	ns.procs = append(ns.procs, cmd)
	ns.mu.Unlock()
	return nil
}

// Run runs cmd inside the namespace and returns its combined output.
func (ns *Namespace) Run(cmd *exec.Cmd) ([]byte, error) {
	var out strings.Builder
	if cmd.Stdout == nil {
		cmd.Stdout = &out
	}
	if cmd.Stderr == nil {
		cmd.Stderr = &out
	}
	if err := ns.Start(cmd); err != nil {
		return nil, err
	}
	err := cmd.Wait()
	return []byte(out.String()), err
}

// delete kills the processes started in the namespace and removes it with everything in it
// (veth ends inside it disappear with it, taking their peers along).
func (ns *Namespace) delete() error {
	ns.mu.Lock()
	for _, p := range ns.procs {
		// Kill is safe on a process that already ended and was waited for (os.ErrProcessDone).
		_ = p.Process.Kill()
	}
	ns.procs = nil
	ns.mu.Unlock()
	if err := netns.DeleteNamed(ns.Name); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("delete network namespace %s: %w", ns.Name, err)
	}
	return nil
}

// CreateNamespace makes a named namespace that belongs to no topology (an endpoint added to a
// running playground). Delete it with DeleteNamespace.
func CreateNamespace(name string) (*Namespace, error) {
	return createNamespace(name)
}

// OpenNamespace refers to an existing named namespace, e.g. one a previous process created.
func OpenNamespace(name string) (*Namespace, error) {
	ns := &Namespace{Name: name, Path: filepath.Join(netnsDir, name)}
	if _, err := os.Stat(ns.Path); err != nil {
		return nil, fmt.Errorf("network namespace %s: %w", name, err)
	}
	return ns, nil
}

// DeleteNamespace removes a named namespace; one that is already gone is not an error.
func DeleteNamespace(name string) error {
	return (&Namespace{Name: name}).delete()
}

// NamespacesWithPrefix lists the named namespaces whose name starts with prefix.
func NamespacesWithPrefix(prefix string) []string {
	var out []string
	entries, _ := os.ReadDir(netnsDir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			out = append(out, e.Name())
		}
	}
	return out
}
