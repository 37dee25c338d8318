// Package link joins an endpoint's network namespace to its node with a veth pair, wired the way
// the datapath expects (DATAPATH.md): the endpoint's address as a /32 on its eth0 with a scope-link
// route to the gateway and a default route through it; on the node side an lxc<hash> device
// carrying the gateway /32 and a /32 route to the endpoint. Setup either completes or leaves
// nothing behind.
package link
