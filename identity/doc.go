// Package identity turns workload labels into numeric security identities.
//
// Labels (source:key=value) have a canonical sorted form; a filter keeps only the
// security-relevant ones. Numeric identities are reserved (1..10), cluster-scoped
// (clusterID<<16 | n, unique across a mesh without coordination) or node-local CIDR identities
// (1<<24 | n). The etcd-backed allocator hands out cluster-scoped identities so that every node of a
// cluster agrees on them, and the cache serves them from a watch.
package identity
