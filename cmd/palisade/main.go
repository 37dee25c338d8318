// Command palisade is the single Palisade binary: daemons (agent, kvstore, mesh API server) and the
// operator CLI.
package main

import (
	"fmt"
	"os"
)

func main() {
	if err := newRootCommand().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "Error:", err)
		os.Exit(1)
	}
}
