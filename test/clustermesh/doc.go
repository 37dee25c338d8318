// Package clustermesh runs clusters connected into a mesh end to end: per cluster an etcd, a
// mesh API server and agents as real processes in the network namespaces of one test topology,
// with cross-cluster policy enforced in the kernel and the L7 proxy. Needs root.
package clustermesh
