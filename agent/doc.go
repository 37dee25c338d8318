// Package agent is the node daemon. It joins the kvstore, identity, policy and datapath packages:
// it registers the node, turns network namespaces into endpoints (address, identity, veth,
// programs), publishes their ipcache entries, watches identities, policies, the ipcache and the
// node registry of its cluster, computes each endpoint's policy and writes it into the kernel, and
// serves the local API the CLI talks to. Enforcement lives in pinned eBPF maps, so traffic keeps
// its last good policy while the agent or etcd is down; a restarted agent adopts what it finds.
package agent
