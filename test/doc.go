// Package test holds integration and end-to-end tests that need etcd, root, network namespaces or
// several processes, and repository-wide checks such as the import rules of DESIGN.md.
package test
