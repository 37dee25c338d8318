// Package playground runs a Palisade cluster on one machine for trying it out and for the demo:
// the network namespaces of DESIGN.md section 9 (a fabric, a control-plane namespace with the
// cluster's etcd, one namespace per node with its agent), and endpoints in namespaces of their
// own with demo workloads. Everything it starts is recorded in a state directory, so a later
// `palisade dev down` removes every trace: processes, namespaces and pinned eBPF state.
package playground
