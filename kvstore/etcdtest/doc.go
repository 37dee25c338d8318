// Package etcdtest starts real etcd servers for tests: the embedded server in-process (Start,
// StartRestartable), Debian's etcd binary as an external process (StartExternal), a TCP proxy that
// can cut a client off from its server (NewProxy), and throwaway TLS material (NewTLSFiles).
// Everything it starts is stopped, and every file removed, when the test ends.
package etcdtest
