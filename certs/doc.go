// Package certs creates the mesh certificate authority and issues the certificates that clusters
// use to authenticate to each other's mesh API servers.
//
// Every certificate names its holder with one SPIFFE URI SAN,
// spiffe://<trust-domain>/cluster/<name>/<role>, where role is server (a mesh API server),
// client (an operator or tool reading a remote cluster) or agent (a node agent watching a remote
// cluster). Keys are ECDSA P-256. Files are written atomically (temporary file and rename) so a
// process reloading them never reads half a file, keys are 0600, and existing material is never
// overwritten unless the caller forces it.
//
// Verifying peers and reloading rotated files is the job of certs/meshtls; access tokens live in
// certs/token.
package certs
