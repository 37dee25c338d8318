package policy

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestImports_PolicyIsPure enforces DESIGN.md's dependency rule for policy/ and its subpackages:
// the standard library, package identity and the YAML decoder, nothing else (no I/O packages).
func TestImports_PolicyIsPure(t *testing.T) {
	const module = "github.com/palisade-mesh/palisade/"
	allowed := func(path string) bool {
		switch {
		case path == module+"identity", strings.HasPrefix(path, module+"policy"):
			return true
		case path == "go.yaml.in/yaml/v3":
			return true
		case path == "os", path == "net", path == "net/http", path == "os/exec", path == "syscall":
			return false // pure: no I/O
		}
		first, _, _ := strings.Cut(path, "/")
		return !strings.Contains(first, ".")
	}
	checked := 0
	err := filepath.WalkDir(".", func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return err
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		checked++
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			if !allowed(p) {
				t.Errorf("%s imports %s: policy/ may import only the standard library (no I/O), identity and the YAML decoder", path, p)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 10 {
		t.Fatalf("checked only %d files", checked)
	}
}
