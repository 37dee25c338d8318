package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/palisade-mesh/palisade/kvstore/etcdtest"
)

func TestPolicyImportGetDelete(t *testing.T) {
	srv := etcdtest.Start(t)
	kv := []string{"--kvstore-endpoints", srv.Endpoints()[0]}
	dir := t.TempDir()

	// A file larger than etcd's default transaction limit (128 operations) imports as one.
	var many strings.Builder
	for i := range 300 {
		fmt.Fprintf(&many, "---\napiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: p%d, namespace: default}\nspec:\n  endpointSelector: {matchLabels: {app: a%d}}\n  ingress: [{fromEndpoints: [{matchLabels: {app: client}}]}]\n", i, i)
	}
	manyFile := filepath.Join(dir, "many.yaml")
	if err := os.WriteFile(manyFile, []byte(many.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := runPalisade(t, append([]string{"policy", "import", "-f", manyFile}, kv...)...)
	if err != nil || !strings.Contains(out, "300 policies imported") {
		t.Fatalf("import 300: %v\n%s", err, out)
	}

	// One bad document: nothing of the file is written.
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte(`apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: good, namespace: default}
spec: {endpointSelector: {}, ingress: [{fromEntities: [world]}]}
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: broken, namespace: default}
spec: {endpointSelector: {}, egress: [{toEntities: [kube-dns]}]}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err = runPalisade(t, append([]string{"policy", "import", "-f", bad}, kv...)...)
	if err == nil || !strings.Contains(err.Error(), `unknown entity "kube-dns"`) || !strings.Contains(err.Error(), "nothing imported") {
		t.Fatalf("bad file: err=%v out=%s", err, out)
	}

	out, err = runPalisade(t, append([]string{"policy", "get", "-o", "json"}, kv...)...)
	if err != nil {
		t.Fatal(err)
	}
	var stored []storedPolicy
	if err := json.Unmarshal([]byte(out), &stored); err != nil {
		t.Fatalf("policy get output: %v", err)
	}
	if len(stored) != 300 {
		t.Fatalf("stored %d policies, want 300 (the bad file must add none)", len(stored))
	}

	out, err = runPalisade(t, append([]string{"policy", "delete", "p7", "p8"}, kv...)...)
	if err != nil || !strings.Contains(out, "2 policies deleted") {
		t.Fatalf("delete by name: %v\n%s", err, out)
	}
	out, err = runPalisade(t, append([]string{"policy", "delete", "--all"}, kv...)...)
	if err != nil || !strings.Contains(out, "298 policies deleted") {
		t.Fatalf("delete --all: %v\n%s", err, out)
	}
	if _, err := runPalisade(t, append([]string{"policy", "delete", "p1"}, kv...)...); err == nil {
		t.Fatal("deleting a policy that does not exist succeeded")
	}
}
