// Package api holds the policy language users write: Cilium's cilium.io/v2 CiliumNetworkPolicy and
// CiliumClusterwideNetworkPolicy, and Kubernetes' networking.k8s.io/v1 NetworkPolicy.
//
// Decode turns YAML (several documents) or JSON (one object, a List, an array of objects, or a bare
// array of rules as `policy import` takes it) into validated Policy objects. Decoding is strict:
// unknown fields, wrong types, bad ports, CIDRs, regexes and entities are rejected with the
// document, the field path and the reason; suspicious but legal input yields a Warning. A file with
// one bad document yields no policy at all.
//
// A Policy keeps the object as the user wrote it (its canonical JSON is what the agent stores) and
// knows how to express itself as Cilium rules (Rules), including a NetworkPolicy, so that the engine
// in package policy has a single language to compute.
package api
