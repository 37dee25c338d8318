// Package kvstore runs the kvstore conformance suite against Debian's etcd 3.4 server started as an
// external process, the etcd a production cluster may already run.
package kvstore
