// Package identity turns workload labels into numeric security identities.
//
// Labels (source:key=value) have a canonical sorted form; a filter keeps only the
// security-relevant ones. Numeric identities are reserved (1..10), cluster-scoped
// (clusterID<<16 | n, unique across a mesh without coordination) or node-local CIDR identities
// (1<<24 | n). The etcd-backed Allocator hands out cluster-scoped identities so that every node of
// a cluster agrees on them, the Cache serves them from a watch, and GC reclaims the unreferenced
// ones. ClusterConfig fixes a cluster's name, ID and identity layout at creation.
//
// # Keys
//
// Relative to the kvstore prefix (DESIGN.md section 4):
//
//	identities/id/<id>            {"labels":"<canonical>"}  master key: the owner of a number
//	identities/value/<sha256>     <id>                      value key: the number of a label set
//	identities/refs/<id>/<node>   {}                        a node's reference, on its lease
//
// # Allocation
//
// Allocate first looks for the labels among the identities this node already holds and only counts
// a use (no round trip). Otherwise it runs transactions of one shape until one succeeds:
//
//	if   <conditions on the value key of the labels and the master key of one number>
//	then put master(id)=labels, put value(digest)=id, put ref(id, node) with the node's lease
//	else get value(digest), get master(id)
//
// The conditions come from what the allocator knows (plan.go): with the cache mapping the labels
// to id, that both keys hold exactly that (the common case: one round trip); with nothing known,
// that the value key and the master key of a fresh number are absent (a new identity: one round
// trip). A failed transaction returns both keys, so the next attempt conditions on their observed
// revisions: it references the winner of a race for the same labels, restores a missing master of
// an existing value, replaces a value key pointing at other labels (an orphan), or picks another
// number when the master was taken. Numbers are picked at random among those the cache does not
// know (and, when the cache thinks the range is full, among those an authoritative listing shows
// free; if there are none the error names the range and the count). No lock is taken: nodes
// allocating different labels never wait for each other, and a lost race costs one more round
// trip. Attempts that keep failing, or fail because etcd is away, back off exponentially.
//
// # Garbage collection
//
// GC lists the master keys, then the value keys, then the references. A master key nobody
// references is marked with its revision (and its value key's); a round later, if it is still
// unreferenced with the same revisions, it is deleted together with its value key in a transaction
// conditioned on both revisions. Value keys whose master is gone or holds other labels (orphans)
// are handled the same way. Deletions are rate limited.
//
// # Why GC never deletes an identity that someone holds
//
// Invariant: every transaction that writes a reference key also writes the master key (and value
// key) of that identity. Now take a GC deletion of master(id) conditioned on the revision m it
// had when masters were listed (at store revision R1), after references were listed at R3 >= R1
// without one for id. Suppose a reference to id exists when the deletion commits. If it was
// written after R1, the same transaction rewrote master(id), so its revision is no longer m and
// the deletion fails. If it was written before R1 and still exists, it existed at R3 and the
// listing would have shown it. So the deletion only commits when nobody references id. A
// reference can also not be created after the deletion for the deleted labels/number pair:
// allocation's conditions require the value and master keys to be present as observed, so a
// racing allocation fails and, on its next attempt, sees both keys absent and creates them again.
// Creation conditions on absent keys (create-only) and every other write on observed revisions or
// exact values, so no allocation ever overwrites a master key holding another label set, and the
// value key, written only together with its master, keeps one number per label set.
//
// # Holding identities
//
// A node's references live on its lease (kvstore.Session). When the session expires (etcd
// unreachable for longer than the lease TTL), the references are gone and GC may reclaim numbers
// only this node held; the allocator starts a new session and restores every held identity with
// the same conditional transactions, recreating a missing master or value key create-only. The
// cache's watch also reports a vanished master of a held identity, which is restored the same way.
// If meanwhile the number went to another label set, or the labels to another number, the identity
// is lost: the allocator forgets it and calls AllocatorConfig.OnLost so that its users allocate
// again.
package identity
