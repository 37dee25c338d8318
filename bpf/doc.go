// Package bpf is Palisade's kernel datapath: eBPF programs that enforce per-endpoint L3/L4 policy
// by security identity, track connections, report verdicts, and steer flows that need the L7 proxy
// into the proxy's listener.
//
// # Programs
//
// Two TCX programs sit on the node-side veth (lxc*) of every endpoint: the ingress hook sees what
// the endpoint sends (its egress policy), the egress hook what is delivered to it (its ingress
// policy). An SK_LOOKUP program in each endpoint's network namespace hands new inbound connections
// whose conntrack entry carries a proxy port to the proxy socket registered for that port. The C
// sources are datapath.c and include/datapath.h; `make generate` rebuilds the committed objects
// with bpf2go, so nothing else needs clang.
//
// # Maps and their Go wrappers
//
//   - ipcache (shared LPM trie): prefix -> identity; [Datapath.UpsertIPCache], [Datapath.DeleteIPCache].
//     An address no prefix covers has the world identity (2).
//   - policy (hash of maps keyed by endpoint ID): one inner hash per endpoint, key {identity, port,
//     protocol, direction}, value {deny, proxy port, packet and byte counters}.
//     [Datapath.ReplacePolicy] swaps the inner map in one update, so a policy changes atomically;
//     [Datapath.ApplyPolicyDelta] edits it in place.
//   - conntrack (shared LRU hash): direction-aware flows with TCP state; [Conntrack].
//   - endpoints (registry keyed by the node-side ifindex): [Datapath.AttachEndpoint].
//   - events (ring buffer) with a per-CPU token bucket and drop counters; [Datapath.Events].
//   - proxy sockets (SOCKHASH keyed by proxy port); [Datapath.RegisterProxySocket].
//
// # Policy evaluation
//
// Only a new flow is evaluated: a TCP SYN or the first packet of any other protocol. The ladder,
// most specific first, is {identity, port, proto}, {identity, any port, proto}, {identity, any},
// {any identity, port, proto}, {any identity, any port, proto}, {any}. A deny entry anywhere on the
// ladder wins; otherwise the most specific allow decides, and its proxy port is recorded in the
// flow. No match drops the packet. An endpoint with no policy installed drops everything, so the
// agent installs {any} allow entries for directions it does not enforce.
//
// Port ranges are expanded into one entry per port (see [PolicyEntry]); a range counts against the
// policy map size limit with all its ports, and the range 1-65535 is stored as the port wildcard.
// Exceeding the limit returns a [*PolicyMapFullError] naming the endpoint and the entries needed.
//
// # Conntrack
//
// The key holds the direction the flow was admitted in, so one endpoint's egress entry never
// stands in for its peer's ingress check on the same node. Replies match the reversed tuple with
// the opposite direction. A TCP packet that is not a SYN and matches no flow is dropped. FIN from
// both sides or RST closes a flow (it expires after the closing timeout); any bare SYN is evaluated
// against the policy again, so a reused 5-tuple never rides on an old verdict. Policy changes
// through ReplacePolicy and ApplyPolicyDelta cut established flows the new policy no longer allows
// (their entries are deleted, and their next packet is dropped as "no conntrack"); a [PolicyBatch]
// does the same for many endpoints with one pass over the table.
//
// # Pinning and restarts
//
// Maps are pinned under Options.PinDir/maps and each endpoint's links under
// Options.PinDir/endpoints/<id>, so enforcement continues after the process exits. [Open] on an
// existing pin directory reuses the maps, moves every pinned link to the freshly loaded programs
// and drops links whose interface or namespace is gone; it never tears down working state.
// [Datapath.Close] only releases the process's handles; [Datapath.Remove] detaches everything and
// deletes the pins.
//
// # Network namespaces
//
// TCX attachment resolves interface names and indexes in the calling thread's network namespace:
// call AttachEndpoint from the node's namespace (the agent runs there). Map operations work from
// anywhere.
//
// # Limits
//
// IPv4 only for now; the keys already carry a family and 16-byte addresses for IPv6. Until then the
// programs drop IPv6 (and any other non-ARP ethertype) with reason "unsupported L3": disable IPv6
// in endpoint namespaces. ARP always passes. IPv4 fragments after the first are dropped
// ("malformed"), since they carry no ports.
//
// The L7 redirect works for ingress policy (the proxy listens inside the destination endpoint's
// namespace and the sk_lookup program there hands it the flow); egress entries with a proxy port
// are rejected with an error, because sk_lookup never runs for a connection leaving a namespace and
// bpf_sk_assign from tc breaks under TIME_WAIT reuse (DATAPATH.md). No SO_MARK bypass is needed:
// the proxy's upstream connection to its own endpoint stays on loopback and has no proxied
// conntrack entry.
//
// Policy counters count the packets evaluated against an entry (first packet of each admitted flow,
// every denied packet); a flow's later packets are counted in its conntrack entry.
//
// Events are rate-limited per CPU (Options.EventsPerSecond, EventsBurst); suppressed and lost
// events are counted ([Datapath.EventStats]). The ring buffer has a single consumer.
package bpf
