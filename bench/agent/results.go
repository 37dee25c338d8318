package main

import (
	"cmp"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strings"
	"time"
)

// results of a whole run, printed as Markdown tables.
type results struct {
	load         string
	imports      importResult
	creates      createResult
	memory       memoryResult
	worldImports *importResult
	elapsed      time.Duration
}

func (r results) print(w io.Writer, cfg config) {
	fmt.Fprintf(w, "\nagent benchmark: 2 nodes, etcd fsync %v, load average at start %s, run time %s\n", cfg.fsync, r.load, r.elapsed.Round(time.Second))

	fmt.Fprintf(w, "\n1. policy import to enforcement: %d endpoints, %d imports, API polled every %s\n\n", r.imports.endpoints, r.imports.imports, cfg.poll)
	r.imports.print(w)
	if r.worldImports != nil {
		fmt.Fprintf(w, "\n1b. the same with figure 3's world loaded (%d identities, %d rules): %d imports\n\n", cfg.identities, cfg.rules, r.worldImports.imports)
		r.worldImports.print(w)
	}

	if cfg.importsOnly {
		return
	}
	fmt.Fprintf(w, "\n2. endpoint create to first allowed connection: %d endpoints, connection tried every %s\n\n", len(r.creates.total), cfg.probeInterval)
	r.creates.print(w)

	fmt.Fprintf(w, "\n3. agent memory with %d identities and %d rules\n\n", cfg.identities, cfg.rules)
	r.memory.print(w, cfg)
}

func (r importResult) print(w io.Writer) {
	fmt.Fprintln(w, "| measure | p50 | p99 | max | target |")
	fmt.Fprintln(w, "|---|---|---|---|---|")
	durationRow(w, "per endpoint, from the start of `palisade policy import`", r.perEndpoint, "p99 < 250 ms")
	durationRow(w, "per endpoint, from the etcd commit", r.fromCommit, "")
	durationRow(w, "per import, until the last endpoint", r.lastEndpoint, "")
	durationRow(w, "per import, `palisade policy import` run time", r.cli, "")
	durationRow(w, "of which: CLI start to etcd commit (per import)", r.toCommit, "")
	if len(r.toApplied) > 0 {
		durationRow(w, "of which: commit to the agent's engine having the policies (watch, same-revision window, engine)", r.toApplied, "")
		durationRow(w, "of which: engine to every endpoint enforcing them (regeneration pass, per agent)", r.toEnforced, "")
		durationRow(w, "the regeneration pass itself (per agent)", r.pass, "")
		durationRow(w, "of which: enforced to seen by the harness's poll (per agent)", r.toSeen, "")
	}
	durationRow(w, "first connection on the newly allowed port (2 per import)", r.traffic, "")
	durationRow(w, "that connection minus the target's reported revision", r.trafficLag, "")
	numberRow(w, "endpoint regenerations per import (both agents)", r.regenerations, "%.0f")
	numberRow(w, "regeneration time per import, ms (both agents)", scale(r.regenSeconds, 1000), "%.1f")
	numberRow(w, "agents' CPU time per import, ms (both, incl. serving the polls)", scale(r.agentCPU, 1000), "%.0f")
	if r.noBreakdown != nil {
		fmt.Fprintf(w, "\n(no breakdown for %d of %d agent imports: %v)\n", r.imports*2-len(r.toApplied), r.imports*2, r.noBreakdown)
	}
}

func (r createResult) print(w io.Writer) {
	fmt.Fprintln(w, "| measure | n | p50 | p99 | max | over 150 ms | target |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|")
	createRow(w, "create to first allowed connection", r.total, "p99 < 150 ms")
	createRow(w, "of which the CreateEndpoint call", r.rpc, "")
	for _, kind := range createKinds {
		createRow(w, kind, r.byKind[kind], "")
	}
}

func (r memoryResult) print(w io.Writer, cfg config) {
	fmt.Fprintln(w, "| agent | RSS before | after identities | after rules | peak RSS | after rules: file-backed / Go heap in use | target |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|")
	for n := range r.before {
		after := r.afterRules[n]
		fmt.Fprintf(w, "| n%d | %s | %s | %s | %s | %s / %s | < 100 MB |\n", n+1, mb(r.before[n].rss), mb(r.afterIdentities[n].rss), mb(after.rss), mb(after.peakRSS), mb(after.rssFile), mb(after.heapInuse))
	}
	fmt.Fprintf(w, "| n1 restarted into the world | | | %s | %s | %s / %s | < 100 MB |\n", mb(r.restarted.rss), mb(r.restarted.peakRSS), mb(r.restarted.rssFile), mb(r.restarted.heapInuse))
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| step | time |")
	fmt.Fprintln(w, "|---|---|")
	fmt.Fprintf(w, "| simulated node allocates %d identities (%d at a time) | %s |\n", cfg.identities, allocateWorkers, r.allocate.Round(time.Millisecond))
	fmt.Fprintf(w, "| agents list them all, after the last allocation | %s |\n", perAgent(r.identityLag))
	fmt.Fprintf(w, "| agents' CPU time while identities arrive and are absorbed | %s |\n", perAgentSeconds(r.identityCPU))
	fmt.Fprintf(w, "| `palisade policy import` of %d rules (%d runs) | %s |\n", cfg.rules, r.importRuns, r.imports.Round(time.Millisecond))
	fmt.Fprintf(w, "| every endpoint at the final revision, from the first import | %s |\n", perAgent(r.ruleAbsorb))
	fmt.Fprintf(w, "| the same, after the last import | %s |\n", perAgent(r.ruleLag))
	fmt.Fprintf(w, "| agents' CPU time from the first import until converged | %s |\n", perAgentSeconds(r.ruleCPU))
	fmt.Fprintf(w, "| n1 restarted: API up (endpoints restored) / every endpoint at its revision | %s / %s |\n", r.restartReady.Round(time.Millisecond), r.restartConverged.Round(time.Millisecond))
	fmt.Fprintf(w, "| median policy entries of a figure-1 endpoint, before / after | %s |\n", entries(r.entriesBefore, r.entriesAfter))
}

func createRow(w io.Writer, name string, ds []time.Duration, target string) {
	over := 0
	for _, d := range ds {
		if d > slowCreate {
			over++
		}
	}
	fmt.Fprintf(w, "| %s | %d | %s | %s | %s | %d | %s |\n", name, len(ds), ms(pct(ds, 50)), ms(pct(ds, 99)), ms(pct(ds, 100)), over, target)
}

func durationRow(w io.Writer, name string, ds []time.Duration, target string) {
	fmt.Fprintf(w, "| %s | %s | %s | %s | %s |\n", name, ms(pct(ds, 50)), ms(pct(ds, 99)), ms(pct(ds, 100)), target)
}

func numberRow(w io.Writer, name string, xs []float64, format string) {
	f := func(x float64) string { return fmt.Sprintf(format, x) }
	fmt.Fprintf(w, "| %s | %s | %s | %s | |\n", name, f(pct(xs, 50)), f(pct(xs, 99)), f(pct(xs, 100)))
}

// pct is the nearest-rank percentile (p=100: the maximum; none: zero).
func pct[T cmp.Ordered](xs []T, p float64) T {
	var zero T
	if len(xs) == 0 {
		return zero
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	rank := int(math.Ceil(p / 100 * float64(len(s))))
	return s[max(rank, 1)-1]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }

func mb(bytes uint64) string { return fmt.Sprintf("%.1f MB", float64(bytes)/1e6) }

func scale(xs []float64, f float64) []float64 {
	out := make([]float64, len(xs))
	for i, x := range xs {
		out[i] = x * f
	}
	return out
}

func perAgent(ds []time.Duration) string {
	var parts []string
	for n, d := range ds {
		parts = append(parts, fmt.Sprintf("n%d %s", n+1, d.Round(time.Millisecond)))
	}
	return strings.Join(parts, ", ")
}

func perAgentSeconds(xs []float64) string {
	var parts []string
	for n, x := range xs {
		parts = append(parts, fmt.Sprintf("n%d %.2fs", n+1, x))
	}
	return strings.Join(parts, ", ")
}

func entries(before, after []uint32) string {
	var parts []string
	for n := range before {
		parts = append(parts, fmt.Sprintf("n%d %d / %d", n+1, before[n], after[n]))
	}
	return strings.Join(parts, ", ")
}

// loadAverage is the first line of /proc/loadavg (the two cores are shared with other work).
func loadAverage() string {
	raw, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(raw))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
