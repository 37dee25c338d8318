// Package kvstore is palisade's access to etcd and the only package that imports etcd's client.
//
// A Client keeps every key under a prefix (default "palisade/v1/", see DESIGN.md section 4) that its
// callers never see. It offers typed reads and writes, create-only and compare-and-swap writes,
// transactions, leases and lease sessions (a set of kept-alive leases that rotates to a fresh lease
// before one carries too many keys), and Watch: a prefix listing at revision R followed by a synced
// marker and the changes from R+1, which survives compactions and lost connections by relisting and
// emitting only what changed while it was away.
//
// Metrics are Prometheus collectors registered on the Registerer the caller passes in Config.
package kvstore
