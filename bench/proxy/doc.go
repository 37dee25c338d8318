// Package proxybench measures the L7 proxy end to end: requests per second and latency
// percentiles from one endpoint to another, direct (L3/L4 allow), through the proxy (an L7 allow
// rule) and through HAProxy configured with the same method/path rule, keep-alive and with a new
// connection per request, all in the same topology and the same run. The server runs in its own
// processes (as an endpoint's workload does), the paths take turns in rounds so that the other
// load on a shared machine spreads over all of them, and the CPU time per request of the agent,
// HAProxy, the client and the servers is reported with the throughput. Run it as root:
//
//	go test -run XXX -bench . -benchtime 1x ./bench/proxy/ [-args -concurrency N -modes keep-alive,per-request]
package proxybench
