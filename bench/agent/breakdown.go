package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
)

// Where the time of one import goes on one agent, from the agent's own log lines: "policies
// applied" (the watch delivered the transaction, the same-revision window closed and the policy
// engine recomputed) and "endpoint policies enforced" (the regeneration pass wrote every
// endpoint's policy and cut the flows it refuses). Log times have millisecond resolution.
type agentSteps struct {
	applied, enforced time.Time
	pass              time.Duration // the pass's own duration, as the agent measured it
}

// logOffset is the current size of the agent's log: where the lines of the next import start.
func (a *agentProc) logOffset() (int64, error) {
	st, err := os.Stat(a.logPath)
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}

// importSteps reads the agent's log from offset and returns the first policy application after
// it and the first pass that enforced that revision (or a later one) on more than one endpoint.
func (a *agentProc) importSteps(offset int64) (agentSteps, error) {
	f, err := os.Open(a.logPath)
	if err != nil {
		return agentSteps{}, err
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return agentSteps{}, err
	}
	var (
		steps   agentSteps
		applied uint64
	)
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case steps.applied.IsZero() && strings.Contains(line, `msg="policies applied"`):
			if steps.applied, err = logTime(line); err != nil {
				return steps, err
			}
			if applied, err = strconv.ParseUint(logField(line, "revision"), 10, 64); err != nil {
				return steps, fmt.Errorf("agent %s log: revision of %q: %w", a.node.Name, line, err)
			}
		case !steps.applied.IsZero() && strings.Contains(line, `msg="endpoint policies enforced"`):
			rev, err := strconv.ParseUint(logField(line, "revision"), 10, 64)
			if err != nil || rev < applied || logField(line, "endpoints") == "1" {
				continue
			}
			if steps.enforced, err = logTime(line); err != nil {
				return steps, err
			}
			if steps.pass, err = time.ParseDuration(logField(line, "took")); err != nil {
				return steps, fmt.Errorf("agent %s log: took of %q: %w", a.node.Name, line, err)
			}
			return steps, nil
		}
	}
	if err := sc.Err(); err != nil {
		return steps, err
	}
	return steps, fmt.Errorf("agent %s logged no policy application and enforcing pass for the import", a.node.Name)
}

// logField returns the unquoted value of key in a log line of slog's text handler, or "".
func logField(line, key string) string {
	_, rest, ok := strings.Cut(" "+line, " "+key+"=")
	if !ok {
		return ""
	}
	v, _, _ := strings.Cut(rest, " ")
	return v
}

func logTime(line string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, logField(line, "time"))
	if err != nil {
		return t, fmt.Errorf("time of agent log line %q: %w", line, err)
	}
	return t, nil
}
