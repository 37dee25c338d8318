// Package apiserver is the mesh API server of one cluster: it serves the Mesh gRPC service of
// api/v1/mesh.proto (Info, Watch, ResolveSelector) to the agents and tools of the other clusters,
// read-only, over mTLS (certs/meshtls) with a per-call access token (certs/token).
//
// It keeps a watch-fed, in-memory view of its cluster's identities, ipcache entries and nodes: one
// kvstore watch per key prefix for the whole server, fanned out to every client stream, so the
// number of clients never multiplies the load on etcd. A Watch stream first receives the current
// state (in bounded batches), then a response with sync_done set, then the changes as they
// happen. With selectors, a stream receives only the identities matching one of them and the
// ipcache entries of those identities; nodes always.
//
// Each client cluster is rate limited and may hold a bounded number of Watch streams. Each stream
// has a bounded queue of changes waiting to be sent: a client that falls further behind is
// disconnected with codes.ResourceExhausted ("client too slow") instead of growing the server's
// memory. A Watch stream is checked again while it lives: its token twice a second (expiry with
// the verifier's leeway, the revocation list) and its client certificate's expiry; when either
// stops being valid the stream ends with codes.Unauthenticated. The server also writes the cluster's heartbeat key and, when elected among the
// replicas through etcd, runs the cluster's identity garbage collection (identity.GC).
//
// Starting a server in a test (the PKI and the token verifier come from certs and certs/token):
//
//	srv, err := apiserver.New(ctx, kv, apiserver.Options{
//		ClusterName:   "cluster1",
//		ClusterID:     1,
//		ListenAddress: "127.0.0.1:0",
//		TLS:           source,   // *meshtls.Source with cluster1's server certificate
//		Verifier:      verifier, // *token.Verifier of cluster1's signing key(s)
//	})
//	if err != nil { ... }
//	go srv.Run(ctx)          // serves until ctx ends or Close
//	defer srv.Close()
//	addr := srv.Addr()       // dial with meshtls.ClientConfig(..., ServerCluster: "cluster1")
package apiserver
