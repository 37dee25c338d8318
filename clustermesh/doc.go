// Package clustermesh connects Palisade clusters. Each cluster runs a mesh API server
// (clustermesh/apiserver) that serves its identities, ipcache entries and nodes, read-only, over
// mTLS with per-call access tokens; agents of the other clusters watch it through
// clustermesh/remote and import what their policies select.
//
// This package holds what both sides share: the remote-cluster configuration file that agents
// read (one per remote cluster, in a directory), how access tokens travel with each call, and the
// conversions between the mesh API's messages and Palisade's identity and selector types.
package clustermesh
