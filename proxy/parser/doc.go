// Package parser is the proxy's framework for L7 protocols other than HTTP, selected in policy by
// `l7proto` with key/value rules (`l7`).
//
// A parser sees each direction of a connection as the bytes received so far and answers one
// [Op] at a time: PASS n (forward the next n bytes), MORE n (wait for at least n more bytes), DROP
// n (discard n bytes), INJECT (send bytes back towards the side the data came from) or ERROR
// (close the connection). The framework (package proxy) buffers, loops until the parser asks for
// more, and forwards. Parsers never forward what they do not understand.
//
// Each request a parser recognises is judged with [Session.Allow], which matches its fields
// against the rules that apply to the connection's source identity at that moment, and is
// reported to the access log.
package parser
