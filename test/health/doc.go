// Package health tests gossip health with real processes in node namespaces on the test fabric:
// each member is this test binary re-executed in member mode (the health layer alone, not a full
// agent, so eight of them fit on two cores), gossiping over the fabric with encryption on. Tests
// SIGKILL members, cut a node's fabric link, load every core and send gossip under a wrong key.
package health
