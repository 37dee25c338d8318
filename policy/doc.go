// Package policy computes what every endpoint may send and receive.
//
// It takes validated policies (package policy/api) and the identities of the mesh (label sets with
// their numeric IDs, package identity) and produces, per endpoint identity, a MapState: entries keyed
// by {peer identity, direction, protocol, port range} whose value says allow or deny and, for L7
// rules, that the traffic goes through the proxy with which rules.
//
// The parts:
//   - the SelectorCache holds one entry per distinct selector with the identities it matches,
//     updated incrementally as identities come and go, and tells its users what changed;
//   - the Engine holds the repository of policies (keyed by kind, namespace, name, with a revision;
//     replacing a set is atomic), compiles rules into selectors, gives CIDR peers identities through a
//     CIDRIdentityAllocator, and keeps the computed policy of each registered endpoint identity up to
//     date, returning deltas rather than recomputing;
//   - Decide explains a verdict for one flow, as `palisade policy trace` prints it.
//
// Semantics are Cilium's: an endpoint is default-deny in a direction once a rule selecting it has that
// direction (unless the rule disables it with enableDefaultDeny); deny beats allow; allows add up; no
// ordering between policies. Namespaced policies confine their selectors to their namespace unless a
// selector names io.kubernetes.pod.namespace; peer selectors select the local cluster only unless
// they name io.cilium.k8s.policy.cluster (Options.AllClusters restores all clusters).
//
// MapState semantics for the datapath: for a packet from or to peer identity P on protocol X and port
// N, the applicable entries are those whose identity is P or 0, protocol X or 0, and whose port range
// holds N (port 0 means every port). Any applicable deny drops the packet; otherwise an applicable
// allow without redirect passes it; otherwise applicable redirect entries send it to the proxy, which
// applies the union of their L7 rules; with no applicable entry the packet is dropped. An endpoint
// that is not enforced in a direction has an allow entry {0, dir, 0, 0}. MapState.Lookup implements
// exactly this.
//
// The package does no I/O and imports only package identity.
package policy
