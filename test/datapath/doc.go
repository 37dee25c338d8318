// Package datapath holds the privileged integration tests of the eBPF datapath: real programs in
// the kernel enforcing policy on real traffic between endpoint namespaces of the test topology.
package datapath
