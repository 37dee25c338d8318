package test

import (
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/palisade-mesh/palisade"

// importRule forbids packages matching from (a module-relative prefix) to import any package with
// a prefix in forbidden, unless the importer's path starts with one of allowedUnder.
type importRule struct {
	name         string
	from         string
	forbidden    []string
	allowedUnder []string
}

// The dependency direction of DESIGN.md section 2.
var importRules = []importRule{
	{name: "only kvstore talks to etcd", from: "", forbidden: []string{"go.etcd.io/etcd/client/v3", "go.etcd.io/etcd/server/v3"}, allowedUnder: []string{"kvstore"}},
	{name: "policy is pure: only identity", from: "policy", forbidden: []string{"bpf", "kvstore", "agent", "proxy", "clustermesh", "health", "k8s", "monitor", "cmd"}},
	{name: "identity sits below policy", from: "identity", forbidden: []string{"policy", "bpf", "agent", "proxy", "clustermesh", "health", "cmd"}},
	{name: "bpf does not know policy", from: "bpf", forbidden: []string{"policy", "identity", "agent", "proxy", "clustermesh", "kvstore", "cmd"}},
	{name: "kvstore is the bottom", from: "kvstore", forbidden: []string{"identity", "policy", "bpf", "agent", "proxy", "clustermesh", "health", "cmd"}},
	{name: "certs is a foundation", from: "certs", forbidden: []string{"identity", "policy", "bpf", "agent", "proxy", "clustermesh", "health", "kvstore", "k8s", "cmd"}},
	{name: "health sits below the agent", from: "health", forbidden: []string{"policy", "bpf", "agent", "proxy", "clustermesh", "cmd"}},
	{name: "proxy sits below the agent", from: "proxy", forbidden: []string{"agent", "clustermesh", "health", "kvstore", "cmd"}},
	{name: "clustermesh sits beside the agent, below cmd", from: "clustermesh", forbidden: []string{"agent", "bpf", "proxy", "health", "cmd"}},
	{name: "nothing imports cmd", from: "", forbidden: []string{"cmd"}, allowedUnder: []string{"cmd"}},
	{name: "only cmd (and tests, benchmark harnesses) import agent", from: "", forbidden: []string{"agent"}, allowedUnder: []string{"cmd", "agent", "test", "bench"}},
}

type listedPackage struct {
	ImportPath   string
	Imports      []string
	TestImports  []string
	XTestImports []string
}

func TestImportDirection(t *testing.T) {
	out, err := exec.Command("go", "list", "-json", module+"/...").Output()
	if err != nil {
		var exitErr *exec.ExitError
		if errors.As(err, &exitErr) {
			t.Fatalf("go list: %v\n%s", err, exitErr.Stderr)
		}
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	checked := 0
	for {
		var p listedPackage
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("decode go list output: %v", err)
		}
		checked++
		rel := strings.TrimPrefix(strings.TrimPrefix(p.ImportPath, module), "/")
		for _, imp := range p.Imports {
			for _, r := range importRules {
				if violates(r, rel, imp) {
					t.Errorf("%s: %s imports %s", r.name, p.ImportPath, imp)
				}
			}
		}
	}
	if checked == 0 {
		t.Fatal("go list returned no packages")
	}
}

func violates(r importRule, importer, imported string) bool {
	if !underPrefix(importer, r.from) {
		return false
	}
	for _, a := range r.allowedUnder {
		if underPrefix(importer, a) {
			return false
		}
	}
	target := imported
	if strings.HasPrefix(imported, module+"/") {
		target = strings.TrimPrefix(imported, module+"/")
	}
	for _, f := range r.forbidden {
		if underPrefix(target, f) {
			return true
		}
	}
	return false
}

// underPrefix reports whether path is prefix or a package below it ("" matches everything).
func underPrefix(path, prefix string) bool {
	return prefix == "" || path == prefix || strings.HasPrefix(path, prefix+"/")
}

func TestViolates(t *testing.T) {
	etcd := importRules[0]
	cases := []struct {
		rule     importRule
		importer string
		imported string
		want     bool
	}{
		{etcd, "identity", "go.etcd.io/etcd/client/v3", true},
		{etcd, "kvstore", "go.etcd.io/etcd/client/v3", false},
		{etcd, "kvstore/embedded", "go.etcd.io/etcd/server/v3/embed", false},
		{etcd, "kvstoreevil", "go.etcd.io/etcd/client/v3", true},
		{importRules[1], "policy/api", module + "/bpf", true},
		{importRules[1], "policy", module + "/identity", false},
		{importRules[1], "policyx", module + "/bpf", false},
		{ruleNamed("nothing imports cmd"), "agent", module + "/cmd/palisade", true},
		{ruleNamed("certs is a foundation"), "certs/token", module + "/kvstore", true},
		{ruleNamed("proxy sits below the agent"), "proxy/parser/r2d2", module + "/agent", true},
	}
	for _, c := range cases {
		if got := violates(c.rule, c.importer, c.imported); got != c.want {
			t.Errorf("violates(%q, %s -> %s) = %v, want %v", c.rule.name, c.importer, c.imported, got, c.want)
		}
	}
}

func ruleNamed(name string) importRule {
	for _, r := range importRules {
		if r.name == name {
			return r
		}
	}
	panic("no import rule " + name)
}
