package datapath

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/palisade-mesh/palisade/bpf"
	"github.com/palisade-mesh/palisade/internal/testenv"
	"github.com/palisade-mesh/palisade/test/topology"
)

// cluster is a topology whose nodes each run a datapath, with every endpoint attached and known to
// every node's ipcache.
type cluster struct {
	t     *testing.T
	topo  *topology.Topology
	nodes map[string]*node
	eps   map[string]*endpoint
	nextE uint32
}

type node struct {
	*topology.Node
	dp     *bpf.Datapath
	events *eventLog
}

type endpoint struct {
	*topology.Endpoint
	id       uint32 // endpoint ID
	identity uint32
	node     *node
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	testenv.RequireRoot(t)
	return &cluster{t: t, topo: topology.NewForTest(t, topology.Options{}), nodes: map[string]*node{}, eps: map[string]*endpoint{}, nextE: 1}
}

// pinDir is unique per test node and removed by the datapath's Remove.
func pinDir(suffix, name string) string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return filepath.Join("/sys/fs/bpf", fmt.Sprintf("palisade-test-%d-%s-%s-%s", os.Getpid(), suffix, name, hex.EncodeToString(b[:])))
}

func (c *cluster) addNode(name string, opts bpf.Options) *node {
	c.t.Helper()
	tn := c.topo.MustAddNode(c.t, name)
	if opts.PinDir == "" {
		opts.PinDir = pinDir(c.topo.Suffix(), name)
	}
	dp, err := bpf.Open(opts)
	if err != nil {
		c.t.Fatalf("open datapath of %s: %v", name, err)
	}
	n := &node{Node: tn, dp: dp}
	ids, err := dp.ProgramIDs()
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() {
		if err := dp.Remove(); err != nil {
			c.t.Errorf("remove datapath of %s: %v", name, err)
		}
		assertNoLeftovers(c.t, opts.PinDir, ids)
	})
	n.events = startEvents(c.t, dp)
	c.nodes[name] = n
	return n
}

// assertNoLeftovers checks that the pin directory and every program the datapath loaded are gone.
func assertNoLeftovers(t *testing.T, dir string, progIDs map[string]uint32) {
	t.Helper()
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pin directory %s left behind", dir)
	}
	for name, id := range progIDs {
		// The kernel frees a program asynchronously (RCU) once its last reference is gone.
		deadline := time.Now().Add(2 * time.Second)
		for {
			p, err := ebpf.NewProgramFromID(ebpf.ProgramID(id))
			if err != nil {
				break
			}
			p.Close()
			if time.Now().After(deadline) {
				t.Errorf("program %s (id %d) still loaded", name, id)
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// addEndpoint creates an endpoint on n, attaches the datapath, and publishes its identity to every
// node's ipcache (native routing: the source address reveals the identity on any node).
func (c *cluster) addEndpoint(n *node, name string, identity uint32) *endpoint {
	c.t.Helper()
	te := n.MustAddEndpoint(c.t, name)
	ep := &endpoint{Endpoint: te, id: c.nextE, identity: identity, node: n}
	c.nextE++
	cfg := bpf.EndpointConfig{ID: ep.id, IfName: te.HostIf, NetnsPath: te.NS.Path, IPv4: te.IP}
	if err := n.NS.Do(func() error { return n.dp.AttachEndpoint(cfg) }); err != nil {
		c.t.Fatalf("attach %s: %v", name, err)
	}
	for _, other := range c.nodes {
		if err := other.dp.UpsertIPCache(netip.PrefixFrom(te.IP, 32), identity); err != nil {
			c.t.Fatal(err)
		}
	}
	c.eps[name] = ep
	return ep
}

// policy installs entries as the endpoint's whole policy.
func (c *cluster) policy(ep *endpoint, entries ...bpf.PolicyEntry) {
	c.t.Helper()
	if err := ep.node.dp.ReplacePolicy(ep.id, entries); err != nil {
		c.t.Fatalf("policy of %s: %v", ep.Name, err)
	}
}

var (
	allowAllEgress  = bpf.PolicyEntry{Direction: bpf.Egress}
	allowAllIngress = bpf.PolicyEntry{Direction: bpf.Ingress}
)

func allowTCP(identity uint32, port uint16) bpf.PolicyEntry {
	return bpf.PolicyEntry{Identity: identity, Direction: bpf.Ingress, Protocol: bpf.ProtoTCP, Port: port}
}

// echoServer answers every connection on ep:port with its greeting followed by whatever it reads.
// Cleanup closes the listener and every open connection (a flow the datapath cut never sees a FIN).
func echoServer(t *testing.T, ep *endpoint, port int, greeting string) net.Listener {
	t.Helper()
	ln, err := ep.NS.Listen("tcp", fmt.Sprintf(":%d", port))
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns = map[net.Conn]struct{}{}
	)
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[conn] = struct{}{}
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() {
					mu.Lock()
					delete(conns, conn)
					mu.Unlock()
					conn.Close()
				}()
				_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
				if _, err := io.WriteString(conn, greeting); err != nil {
					return
				}
				_, _ = io.Copy(conn, conn)
			}()
		}
	}()
	return ln
}

// dial connects from ep to addr with a short timeout: a dropped SYN shows as a timeout.
func dial(from *endpoint, to netip.AddrPort, d *net.Dialer) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
	defer cancel()
	return from.NS.DialContext(ctx, d, "tcp", to.String())
}

// greet connects, reads the greeting and closes; it returns the greeting.
func greet(from *endpoint, to netip.AddrPort) (string, error) {
	conn, err := dial(from, to, nil)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	return readGreeting(conn)
}

func readGreeting(conn net.Conn) (string, error) {
	_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 64)
	n, err := conn.Read(buf)
	return string(buf[:n]), err
}

func mustGreet(t *testing.T, from *endpoint, to netip.AddrPort, want string) {
	t.Helper()
	got, err := greet(from, to)
	if err != nil || got != want {
		t.Fatalf("%s -> %s: got %q, %v; want %q", from.Name, to, got, err, want)
	}
}

func mustBeBlocked(t *testing.T, from *endpoint, to netip.AddrPort) {
	t.Helper()
	conn, err := dial(from, to, nil)
	if err == nil {
		conn.Close()
		t.Fatalf("%s -> %s: connection succeeded, want it dropped", from.Name, to)
	}
	if !errors.Is(err, context.DeadlineExceeded) && !isTimeout(err) {
		t.Fatalf("%s -> %s: %v, want a timeout (SYN dropped)", from.Name, to, err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func addrPort(ep *endpoint, port uint16) netip.AddrPort { return netip.AddrPortFrom(ep.IP, port) }

// eventLog collects a datapath's events for the length of a test.
type eventLog struct {
	mu     sync.Mutex
	events []bpf.Event
	notify chan struct{}
}

func startEvents(t *testing.T, dp *bpf.Datapath) *eventLog {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ch, err := dp.Events(ctx)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	l := &eventLog{notify: make(chan struct{}, 1)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range ch {
			l.mu.Lock()
			l.events = append(l.events, ev)
			l.mu.Unlock()
			select {
			case l.notify <- struct{}{}:
			default:
			}
		}
	}()
	// Registered after addNode's Remove cleanup, so it runs first: the reader stops before the
	// maps go away.
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return l
}

// wait returns the first event (from the start of the test) that matches, or fails t.
func (l *eventLog) wait(t *testing.T, what string, match func(bpf.Event) bool) bpf.Event {
	t.Helper()
	deadline := time.After(3 * time.Second)
	for {
		l.mu.Lock()
		for _, ev := range l.events {
			if match(ev) {
				l.mu.Unlock()
				return ev
			}
		}
		l.mu.Unlock()
		select {
		case <-l.notify:
		case <-deadline:
			l.mu.Lock()
			defer l.mu.Unlock()
			t.Fatalf("no event %s among %d events: %v", what, len(l.events), l.events)
		}
	}
}

// waitCount waits until n events match, or fails t.
func (l *eventLog) waitCount(t *testing.T, what string, match func(bpf.Event) bool, n int) {
	t.Helper()
	deadline := time.After(3 * time.Second)
	for l.count(match) < n {
		select {
		case <-l.notify:
		case <-deadline:
			t.Fatalf("%d events %s, want %d", l.count(match), what, n)
		}
	}
}

func (l *eventLog) count(match func(bpf.Event) bool) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, ev := range l.events {
		if match(ev) {
			n++
		}
	}
	return n
}

// tcpTo matches events of TCP packets to dst.
func tcpTo(dst netip.AddrPort) func(bpf.Event) bool {
	return func(ev bpf.Event) bool { return ev.Protocol == bpf.ProtoTCP && ev.Dst == dst }
}

func and(preds ...func(bpf.Event) bool) func(bpf.Event) bool {
	return func(ev bpf.Event) bool {
		for _, p := range preds {
			if !p(ev) {
				return false
			}
		}
		return true
	}
}

func verdict(v bpf.Verdict, r bpf.DropReason) func(bpf.Event) bool {
	return func(ev bpf.Event) bool { return ev.Verdict == v && ev.Reason == r }
}

// tcxPrograms counts the TCX programs attached to ifindex in n's namespace.
func tcxPrograms(t *testing.T, n *node, ifindex int) int {
	t.Helper()
	total := 0
	err := n.NS.Do(func() error {
		for _, at := range []ebpf.AttachType{ebpf.AttachTCXIngress, ebpf.AttachTCXEgress} {
			res, err := link.QueryPrograms(link.QueryOptions{Target: ifindex, Attach: at})
			if err != nil {
				return err
			}
			total += len(res.Programs)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("query TCX programs: %v", err)
	}
	return total
}

// dialerFrom binds connections to a local address.
func dialerFrom(addr netip.Addr) *net.Dialer {
	return &net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(addr, 0))}
}
