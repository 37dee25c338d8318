// Package playground runs Palisade on one machine for trying it out and for the demo: the network
// namespaces of DESIGN.md section 9 (a fabric, a control-plane namespace per cluster with its
// etcd, one namespace per node with its agent), and endpoints in namespaces of their own with demo
// workloads. With several clusters it also runs each cluster's mesh API server in its
// control-plane namespace, after creating a mesh CA and connecting every pair of clusters, so the
// agents import each other's identities. Everything it starts is recorded in a state directory,
// so a later `palisade dev down` removes every trace: processes, namespaces and pinned eBPF state.
package playground
