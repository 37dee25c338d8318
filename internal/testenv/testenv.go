package testenv

import (
	"os"
	"os/exec"
	"testing"
)

// InCI reports whether the tests run under CI, where no test may skip.
func InCI() bool { return os.Getenv("CI") != "" }

// RequireRoot skips t (fails it under CI) unless the process runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		unavailable(t, "needs root (network namespaces, eBPF); run the tests as root")
	}
}

// RequireBinary returns the path of an external program, skipping t (failing it under CI) when the
// program is not installed.
func RequireBinary(t testing.TB, name, hint string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		unavailable(t, name+" is not installed: "+hint)
	}
	return path
}

func unavailable(t testing.TB, reason string) {
	t.Helper()
	if InCI() {
		t.Fatalf("prerequisite missing in CI: %s", reason)
	}
	t.Skip(reason)
}
