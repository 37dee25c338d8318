// Package embedded runs an etcd server inside the palisade process (go.etcd.io/etcd/server/v3/embed).
// It is the kvstore of the demo and of single-node installs (`palisade kvstore serve`) and the server
// that tests start in-process. Production clusters point at an existing etcd cluster instead.
//
// Listen URLs may be TCP (http://, https://) or unix sockets (unix://, unixs://). A TCP URL with port 0
// gets a free port chosen before etcd starts, so that the advertised URLs are real addresses and
// concurrent servers never collide.
package embedded
