package clustermesh

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/palisade-mesh/palisade/certs"
)

// RemoteConfig is what an agent needs to watch one remote cluster. Agents read one file per
// remote cluster, <name>.yaml, from their clustermesh config directory; `palisade clustermesh
// connect` writes them. Relative file paths are relative to the file's directory.
type RemoteConfig struct {
	// Name is the remote cluster's name; its server certificate and Info must say the same.
	Name string `json:"name"`
	// Address is host:port of the remote cluster's mesh API server.
	Address string `json:"address"`
	// CAFile is the trust bundle that verifies the remote server (PEM).
	CAFile string `json:"caFile"`
	// CertFile and KeyFile are this cluster's agent certificate and key, presented to the remote.
	CertFile string `json:"certFile"`
	KeyFile  string `json:"keyFile"`
	// TokenFile holds the access token the remote cluster issued to this cluster.
	TokenFile string `json:"tokenFile"`
}

// RemoteConfigExt is the file name extension of remote cluster configurations.
const RemoteConfigExt = ".yaml"

// LoadRemoteConfig reads and validates one remote cluster configuration. Unknown fields are
// errors, so a typo is not silently ignored.
func LoadRemoteConfig(path string) (RemoteConfig, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return RemoteConfig{}, fmt.Errorf("read remote cluster config: %w", err)
	}
	var cfg RemoteConfig
	if err := yaml.UnmarshalStrict(data, &cfg); err != nil {
		return RemoteConfig{}, fmt.Errorf("remote cluster config %s: %w", path, err)
	}
	dir := filepath.Dir(path)
	for _, p := range []*string{&cfg.CAFile, &cfg.CertFile, &cfg.KeyFile, &cfg.TokenFile} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	if err := cfg.Validate(); err != nil {
		return RemoteConfig{}, fmt.Errorf("remote cluster config %s: %w", path, err)
	}
	if want := strings.TrimSuffix(filepath.Base(path), RemoteConfigExt); want != cfg.Name {
		return RemoteConfig{}, fmt.Errorf("remote cluster config %s names cluster %q: the file must be called %s%s", path, cfg.Name, cfg.Name, RemoteConfigExt)
	}
	return cfg, nil
}

// Validate checks that every field is present and well formed.
func (c RemoteConfig) Validate() error {
	if err := certs.ValidateClusterName(c.Name); err != nil {
		return fmt.Errorf("name: %w", err)
	}
	if _, _, err := net.SplitHostPort(c.Address); err != nil {
		return fmt.Errorf("address %q: want host:port: %w", c.Address, err)
	}
	var missing []string
	for _, f := range []struct{ name, value string }{{"caFile", c.CAFile}, {"certFile", c.CertFile}, {"keyFile", c.KeyFile}, {"tokenFile", c.TokenFile}} {
		if f.value == "" {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing %s", strings.Join(missing, ", "))
	}
	return nil
}

// WriteRemoteConfig writes cfg as dir/<name>.yaml, replacing the file atomically so an agent
// watching the directory never reads half of it.
func WriteRemoteConfig(dir string, cfg RemoteConfig) (string, error) {
	if err := cfg.Validate(); err != nil {
		return "", err
	}
	data, err := yaml.Marshal(cfg)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	path := filepath.Join(dir, cfg.Name+RemoteConfigExt)
	tmp, err := os.CreateTemp(dir, "."+cfg.Name+"-*")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Close(); err != nil {
		return "", err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return "", err
	}
	return path, os.Rename(tmp.Name(), path)
}

// ReadToken reads an access token file, trimming surrounding white space.
func ReadToken(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read access token: %w", err)
	}
	tok := strings.TrimSpace(string(data))
	if tok == "" {
		return "", errors.New("access token file " + path + " is empty")
	}
	return tok, nil
}
