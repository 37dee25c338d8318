// Package topology builds the test topology of DESIGN.md section 9 out of network namespaces and
// tears it down completely: a fabric namespace holding a bridge, one namespace per node attached to
// the bridge, and one namespace per endpoint joined to its node by a veth pair wired the way
// DATAPATH.md describes (endpoint /32 on eth0 with a scope-link route to the gateway, node-side
// lxc* device carrying the gateway /32 and a /32 route per endpoint, native routing between nodes
// over the fabric).
//
// The root namespace gets no address, route or link of the topology, and all traffic stays in the
// namespaces. Every name carries a random suffix so that concurrent test packages never collide.
//
// Typical use in a test:
//
//	topo := topology.NewForTest(t, topology.Options{})
//	n1 := topo.MustAddNode(t, "n1")
//	a := n1.MustAddEndpoint(t, "a")
//	b := n1.MustAddEndpoint(t, "b")
//	ln, _ := b.NS.Listen("tcp", ":8080")
//	conn, err := a.NS.DialTimeout("tcp", netip.AddrPortFrom(b.IP, 8080).String(), time.Second)
//
// A control-plane namespace (etcd, the mesh API server) is a node without endpoints: it gets a
// fabric address and routes to every node's pod CIDR.
//
// Code that must run inside a namespace (netlink calls without a handle, sysctls, creating
// sockets, attaching TCX programs) goes through Namespace.Do; a process goes through
// Namespace.Command. Sockets keep the namespace they were created in, so a listener or connection
// made inside Do can be used from any goroutine afterwards.
package topology
