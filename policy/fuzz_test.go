package policy

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/palisade-mesh/palisade/policy/api"
)

// FuzzCompile checks that whatever the decoder accepts, the engine compiles and computes: no
// accepted-but-uncompilable policy, no panic, and removal leaves the cache as it was.
func FuzzCompile(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("..", "examples", "*", "*.*"))
	for _, name := range files {
		if b, err := os.ReadFile(name); err == nil && filepath.Ext(name) != ".md" {
			f.Add(b)
		}
	}
	f.Add([]byte(cnp + "spec:\n  endpointSelector: {}\n  ingress:\n  - fromRequires: [{matchLabels: {app: web}}]\n  - fromEntities: [cluster, all]\n    toPorts: [{ports: [{port: \"53\"}], rules: {dns: [{matchPattern: \"*.example.com\"}]}}]\n"))
	f.Add([]byte(np + "spec:\n  podSelector: {}\n  egress:\n  - to: [{ipBlock: {cidr: 0.0.0.0/0, except: [10.0.0.0/8]}}]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		ps, _, err := api.Decode(data, api.DecodeOptions{Name: "fuzz"})
		if err != nil {
			return
		}
		m := features(t, Options{})
		_, selectorsBefore := m.e.SelectorCache().Len()
		if _, _, err := m.e.ReplacePolicies(ps, nil); err != nil {
			t.Fatalf("accepted policy does not compile: %v", err)
		}
		for _, name := range []string{"web", "api", "db", "batch"} {
			if _, err := m.e.AddEndpoint(m.id(name)); err != nil {
				t.Fatal(err)
			}
			m.e.RemoveEndpoint(m.id(name))
		}
		var keys []api.Key
		for _, p := range ps {
			keys = append(keys, p.Key())
		}
		if _, _, err := m.e.ReplacePolicies(nil, keys); err != nil {
			t.Fatal(err)
		}
		if _, selectors := m.e.SelectorCache().Len(); selectors != selectorsBefore {
			t.Fatalf("%d selectors left behind", selectors-selectorsBefore)
		}
	})
}
