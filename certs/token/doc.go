// Package token issues and verifies the access tokens of the cluster mesh.
//
// A cluster's mesh API server lets a remote cluster read only with a token that the serving
// cluster itself issued for that reader: a JWT signed ES256 with the serving cluster's signing key
// (ECDSA P-256), with issuer = the serving cluster, subject = the reading cluster, audience = the
// mesh API, scopes, an expiry and a token ID. The Verifier checks all of it on every call, binds the
// subject to the cluster named by the caller's client certificate (from certs/meshtls), and
// refuses token IDs on a revocation list that is re-read when its file changes.
package token
