// Package health runs the gossip membership between the agents of one cluster
// (hashicorp/memberlist) and turns it into per-node liveness: alive, suspect, dead or left, each
// with the time it was entered, the last probe round-trip time and the node's metadata (name,
// cluster, addresses, agent version, start time).
//
// Identities and policy travel through etcd; liveness travels here, so a dead node is noticed in
// seconds without loading etcd. Gossip is encrypted with the cluster's key set (KeySet), which can
// be rotated while the cluster runs.
//
// The package knows nothing of etcd: the agent finds seeds in its node registry, reads the key set
// and hands both in.
package health
