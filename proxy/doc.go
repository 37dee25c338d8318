// Package proxy is Palisade's in-process L7 proxy.
//
// The datapath hands it the flows that policy redirects: for each endpoint the agent opens a
// listener inside the endpoint's network namespace ([Endpoint.Listen]), registers it with the
// datapath's SOCKHASH, and an sk_lookup program assigns redirected connections to it. The accepted
// connection's local address is the original destination; the proxy dials it from inside the same
// namespace, so its upstream connection stays on loopback and is never redirected again.
//
// Every request is matched against the L7 rules that apply to the connection's source identity,
// looked up per request in the endpoint's current computed policy ([Endpoint.SetPolicy]) with the
// MapState semantics of package policy: a policy change applies to the next request of a running
// connection. HTTP/1.x is parsed with net/http's parser; a denied request gets
// "403 Forbidden" with body "Access denied\r\n" and the connection stays usable; a malformed one
// gets 400 and the connection is closed, and nothing of it is forwarded. HTTP/2 cleartext with
// prior knowledge (gRPC) is served with net/http's HTTP/2, each stream judged by its path
// (/package.Service/Method). Other protocols go through the generic parser framework of package
// proxy/parser (l7proto in the policy).
//
// Upstream connections are pooled per endpoint (HTTP/1.x: idle connections per destination;
// HTTP/2: one multiplexed connection per destination). No SO_MARK is needed to keep the proxy's
// own connections out of the redirect: they start inside the endpoint's namespace towards the
// endpoint's own address, stay on loopback, and have no conntrack entry with a proxy port.
//
// Each request is published as a monitor event of type l7 (the access log).
package proxy
