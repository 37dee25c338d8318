// Package ipam hands out endpoint addresses from a node's pod CIDR and remembers them in a file, so
// that an agent restarted on the same node gives every restored endpoint the address it had and
// never hands an address in use to a new endpoint.
package ipam
