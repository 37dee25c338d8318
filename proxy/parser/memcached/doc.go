// Package memcached is the proxy parser of memcached's text protocol (l7proto: memcached): get,
// gets, gat, gats, set, add, replace, append, prepend, cas, delete, incr, decr, touch, and the
// keyless version, stats, verbosity, flush_all and quit. Rules match the command and the key; a
// denied request is answered with "CLIENT_ERROR access denied" (nothing when it said noreply) and
// never forwarded, in request order, so the client stays in sync. The binary protocol and anything
// that does not parse close the connection.
package memcached
