// Package conformance is the kvstore test suite, run against every etcd palisade supports: the
// embedded server (kvstore's own tests) and Debian's etcd 3.4 as an external process
// (test/kvstore). It drives real servers only, including stopping them and cutting connections.
package conformance
