package demo

import (
	"fmt"
	"net/http"
)

// DeathstarHandler answers like the deathstar of the scenario:
//
//	POST /v1/request-landing -> 200 "Ship landed"
//	PUT  /v1/exhaust-port    -> 503 "Panic: deathstar exploded"
//	GET  /v1/                -> 200, a JSON description of the API
func DeathstarHandler(name string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/request-landing", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "Ship landed")
	})
	mux.HandleFunc("PUT /v1/exhaust-port", func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, "Panic: deathstar exploded")
	})
	mux.HandleFunc("GET /v1/{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"name":%q,"model":"DS-1 Orbital Battle Station","api":["GET /v1/","POST /v1/request-landing","PUT /v1/exhaust-port"]}`+"\n", name)
	})
	return mux
}
