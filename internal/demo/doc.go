// Package demo holds the workloads of the Star Wars scenario (examples/starwars): the deathstar's
// HTTP API, served by `palisade dev endpoint` in the playground and by the end-to-end tests.
package demo
