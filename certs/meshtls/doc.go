// Package meshtls builds the TLS configurations of the cluster mesh: the mesh API server, which
// requires a client certificate from the mesh CA and learns the peer's cluster from its SPIFFE
// URI, and the clients (agents, tools) that accept a server only when its URI names the cluster
// they meant to reach.
//
// Certificates, keys and the CA bundle come from files that are re-read when they change on disk
// (checked on use, at most once per Source's CheckInterval), so rotating them needs no restart:
// new handshakes use the new material, connections already established keep working.
//
// Peer verification is done here rather than by crypto/tls so that every rejection says what was
// wrong: expired (with dates), not yet valid, signed by another CA, no SPIFFE URI, wrong trust
// domain, another cluster than expected, or the wrong role.
package meshtls
