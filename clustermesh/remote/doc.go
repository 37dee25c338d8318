// Package remote is a client of one remote cluster's mesh API server (clustermesh/apiserver). Agents
// run one per remote cluster to import what their policies select from it; tools can use it to
// watch a remote cluster too.
//
// A Client dials the server with mTLS (certs/meshtls; the server must present the certificate of the
// cluster the configuration names) and sends the access token from its token file with every call,
// re-reading the file when it changes. It asks the server who it is (Info) and lets the caller refuse
// the remote cluster (a name or ID clash), then watches it (Watch with the caller's current
// selectors) and hands the differences to a Consumer.
//
// The client keeps the view it delivered. A new stream (after a reconnect, or when the selectors
// change) is collected in full before anything is delivered, and only the differences with what the
// consumer already holds are delivered when the stream's initial state is complete: nothing is
// deleted before the new state is known, nothing is delivered twice. While the server is unreachable
// the delivered entries stay in force, marked stale, for a grace period; then they are withdrawn.
package remote
