//go:build race

package policy

// raceEnabled: timings under the race detector say nothing about the code's speed.
const raceEnabled = true
