// Package proxy holds the privileged end-to-end tests of the L7 proxy: real agent processes in
// node namespaces, real clients and servers in endpoint namespaces, policies imported with the CLI.
package proxy
