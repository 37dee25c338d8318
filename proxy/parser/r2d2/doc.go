// Package r2d2 is the proxy parser of the r2d2 protocol, Cilium's example of a custom L7
// protocol: one request per line (`READ file`, `WRITE file`, `HALT`, `RESET`, commands
// case-insensitive), one reply line per request. Policy rules match `cmd` (exact, upper case) and
// `file` (regular expression over the whole name). A denied request is answered with
// `ERROR\r\n` and not forwarded; anything that does not parse closes the connection.
package r2d2
