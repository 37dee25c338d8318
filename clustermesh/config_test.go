package clustermesh

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRemoteConfig_RoundTripResolvesRelativePaths(t *testing.T) {
	dir := t.TempDir()
	cfg := RemoteConfig{Name: "cluster2", Address: "10.99.0.9:4245", CAFile: "ca.crt", CertFile: "/abs/agent.crt", KeyFile: "agent.key", TokenFile: "cluster2.token"}
	path, err := WriteRemoteConfig(dir, cfg)
	if err != nil {
		t.Fatal(err)
	}
	got, err := LoadRemoteConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if got.CAFile != filepath.Join(dir, "ca.crt") || got.CertFile != "/abs/agent.crt" || got.TokenFile != filepath.Join(dir, "cluster2.token") {
		t.Errorf("paths not resolved against %s: %+v", dir, got)
	}
}

func TestLoadRemoteConfig_RejectsBadFiles(t *testing.T) {
	for _, tc := range []struct {
		name, file, body, want string
	}{
		{"unknown field", "cluster2.yaml", "name: cluster2\naddress: a:1\ncaFile: c\ncertFile: c\nkeyFile: k\ntokenFile: t\ntokn: x\n", "unknown field"},
		{"missing files", "cluster2.yaml", "name: cluster2\naddress: a:1\n", "missing caFile, certFile, keyFile, tokenFile"},
		{"no port", "cluster2.yaml", "name: cluster2\naddress: a\ncaFile: c\ncertFile: c\nkeyFile: k\ntokenFile: t\n", "want host:port"},
		{"name differs from file", "cluster3.yaml", "name: cluster2\naddress: a:1\ncaFile: c\ncertFile: c\nkeyFile: k\ntokenFile: t\n", "must be called cluster2.yaml"},
		{"bad name", "Bad_Name.yaml", "name: Bad_Name\naddress: a:1\ncaFile: c\ncertFile: c\nkeyFile: k\ntokenFile: t\n", "name:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), tc.file)
			if err := os.WriteFile(path, []byte(tc.body), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := LoadRemoteConfig(path)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("LoadRemoteConfig = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
