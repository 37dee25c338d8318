package clustermesh

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/palisade-mesh/palisade/certs"
	"github.com/palisade-mesh/palisade/certs/meshtls"
	"github.com/palisade-mesh/palisade/certs/token"
)

// A cluster directory holds one cluster's mesh material, as `palisade clustermesh init` lays it
// out and `palisade clustermesh connect` reads it:
//
//	cluster.yaml              name, ID, mesh API server address, trust domain
//	ca.crt                    the mesh trust bundle
//	<name>-server.crt, .key   the mesh API server's certificate
//	<name>-agent.crt, .key    the agents' client certificate
//	signing.key               the key this cluster signs access tokens with
//	remotes/<peer>.yaml       one per connected cluster: the agents' --clustermesh-config directory
//	remotes/<peer>.token      the token <peer> issued to this cluster
const (
	ClusterFile    = "cluster.yaml"
	SigningKeyFile = "signing.key"
	RemotesDir     = "remotes"
	tokenExt       = ".token"
)

// ClusterInfo is cluster.yaml.
type ClusterInfo struct {
	Name        string `json:"name"`
	ID          uint32 `json:"id"`
	Address     string `json:"address"`
	TrustDomain string `json:"trustDomain"`
}

// ClusterDir is an opened cluster directory.
type ClusterDir struct {
	Path string
	Info ClusterInfo
}

func (d ClusterDir) leaf(role certs.Role) certs.LeafPaths {
	return certs.PathsFor(d.Path, d.Info.Name, role)
}

// ServerCert, AgentCert and the others name the files of the directory.
func (d ClusterDir) ServerCert() certs.LeafPaths { return d.leaf(certs.RoleServer) }
func (d ClusterDir) AgentCert() certs.LeafPaths  { return d.leaf(certs.RoleAgent) }
func (d ClusterDir) SigningKey() string          { return filepath.Join(d.Path, SigningKeyFile) }
func (d ClusterDir) Remotes() string             { return filepath.Join(d.Path, RemotesDir) }
func (d ClusterDir) CABundle() string            { return filepath.Join(d.Path, certs.CACertFile) }

// InitOptions describe a new cluster directory.
type InitOptions struct {
	Dir     string
	CADir   string // holds the mesh CA (ca.crt, ca.key)
	Name    string
	ID      uint32
	Address string // host:port other clusters dial
	// DNSNames and IPs are extra SANs of the server certificate; the address's IP is added.
	DNSNames []string
	IPs      []net.IP
	Force    bool
}

// InitClusterDir issues the cluster's server and agent certificates from the mesh CA, creates its
// token signing key and writes cluster.yaml.
func InitClusterDir(opts InitOptions) (ClusterDir, error) {
	info := ClusterInfo{Name: opts.Name, ID: opts.ID, Address: opts.Address}
	if err := certs.ValidateClusterName(info.Name); err != nil {
		return ClusterDir{}, err
	}
	if info.ID < 1 || info.ID > 255 {
		return ClusterDir{}, fmt.Errorf("cluster ID %d: want 1..255", info.ID)
	}
	host, _, err := net.SplitHostPort(info.Address)
	if err != nil {
		return ClusterDir{}, fmt.Errorf("mesh API server address %q: want host:port: %w", info.Address, err)
	}
	ips := opts.IPs
	if ip := net.ParseIP(host); ip != nil {
		ips = append(ips, ip)
	}
	ca, err := certs.LoadCA(opts.CADir)
	if err != nil {
		return ClusterDir{}, err
	}
	info.TrustDomain = ca.TrustDomain
	d := ClusterDir{Path: opts.Dir, Info: info}
	for _, role := range []certs.Role{certs.RoleServer, certs.RoleAgent} {
		io := certs.IssueOptions{Cluster: info.Name, Role: role}
		if role == certs.RoleServer {
			io.DNSNames, io.IPs = opts.DNSNames, ips
		}
		is, err := ca.Issue(io)
		if err != nil {
			return ClusterDir{}, err
		}
		if _, err := is.Write(d.Path, ca.CertPEM(), opts.Force); err != nil {
			return ClusterDir{}, err
		}
	}
	key, err := token.GenerateKey()
	if err != nil {
		return ClusterDir{}, err
	}
	if err := token.WriteKey(d.SigningKey(), key, opts.Force); err != nil {
		return ClusterDir{}, err
	}
	data, err := yaml.Marshal(info)
	if err != nil {
		return ClusterDir{}, err
	}
	if err := certs.WriteFiles([]certs.File{{Path: filepath.Join(d.Path, ClusterFile), Data: data, Mode: 0o644}}, opts.Force); err != nil {
		return ClusterDir{}, err
	}
	return d, nil
}

// OpenClusterDir reads a cluster directory's cluster.yaml.
func OpenClusterDir(path string) (ClusterDir, error) {
	data, err := os.ReadFile(filepath.Join(path, ClusterFile))
	if err != nil {
		return ClusterDir{}, fmt.Errorf("open cluster directory: %w (create it with `palisade clustermesh init`)", err)
	}
	var info ClusterInfo
	if err := yaml.UnmarshalStrict(data, &info); err != nil {
		return ClusterDir{}, fmt.Errorf("%s: %w", filepath.Join(path, ClusterFile), err)
	}
	file := filepath.Join(path, ClusterFile)
	if err := certs.ValidateClusterName(info.Name); err != nil {
		return ClusterDir{}, fmt.Errorf("%s: name: %w", file, err)
	}
	if info.ID < 1 || info.ID > 255 {
		return ClusterDir{}, fmt.Errorf("%s: id %d: want 1..255", file, info.ID)
	}
	if _, _, err := net.SplitHostPort(info.Address); err != nil {
		return ClusterDir{}, fmt.Errorf("%s: address %q: want host:port: %w", file, info.Address, err)
	}
	return ClusterDir{Path: path, Info: info}, nil
}

// Connection is what Connect wrote for one direction: Reader's agents read Served.
type Connection struct {
	Reader    string    `json:"reader"`
	Served    string    `json:"served"`
	Config    string    `json:"config"`
	TokenID   string    `json:"tokenID"`
	ExpiresAt time.Time `json:"expiresAt"`
}

// Connect lets a and b read each other: each one's signing key issues a token for the other,
// and each gets a remote config naming the other's mesh API server. It checks first that the
// names and IDs differ and that each side's certificates are trusted by the other's bundle, and
// writes nothing if a check fails; a failure while writing (a key that does not load, a full
// disk) can leave one direction written. Running it again renews the tokens.
func Connect(a, b ClusterDir, ttl time.Duration) ([]Connection, error) {
	if a.Info.Name == b.Info.Name {
		return nil, fmt.Errorf("both cluster directories (%s, %s) are cluster %q: cluster names must be unique in the mesh", a.Path, b.Path, a.Info.Name)
	}
	if a.Info.ID == b.Info.ID {
		return nil, fmt.Errorf("cluster %q and cluster %q both have cluster ID %d: cluster IDs must be unique in the mesh", a.Info.Name, b.Info.Name, a.Info.ID)
	}
	if err := errors.Join(checkTrust(a, b), checkTrust(b, a)); err != nil {
		return nil, err
	}
	var out []Connection
	for _, pair := range [][2]ClusterDir{{a, b}, {b, a}} {
		c, err := grant(pair[0], pair[1], ttl)
		if err != nil {
			return out, err
		}
		out = append(out, c)
	}
	return out, nil
}

// checkTrust checks that reader's agents accept served's mesh API server and that served accepts
// reader's agents.
func checkTrust(reader, served ClusterDir) error {
	now := time.Now()
	check := func(leafFile, bundleFile string, want meshtls.Expectation) error {
		chain, err := readCerts(leafFile)
		if err != nil {
			return err
		}
		roots, err := readCerts(bundleFile)
		if err != nil {
			return err
		}
		pool := x509.NewCertPool()
		for _, c := range roots {
			pool.AddCert(c)
		}
		_, err = meshtls.VerifyPeer(chain, pool, want, now)
		return err
	}
	if err := check(served.ServerCert().Cert, reader.CABundle(), meshtls.Expectation{
		TrustDomain: reader.Info.TrustDomain, Cluster: served.Info.Name, Roles: []certs.Role{certs.RoleServer}, Usage: x509.ExtKeyUsageServerAuth,
	}); err != nil {
		return fmt.Errorf("%s would not trust the mesh API server of %s: %w", reader.Info.Name, served.Info.Name, err)
	}
	if err := check(reader.AgentCert().Cert, served.CABundle(), meshtls.Expectation{
		TrustDomain: served.Info.TrustDomain, Roles: []certs.Role{certs.RoleAgent}, Usage: x509.ExtKeyUsageClientAuth,
	}); err != nil {
		return fmt.Errorf("%s would not accept the agents of %s: %w", served.Info.Name, reader.Info.Name, err)
	}
	return nil
}

func readCerts(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	cs, err := certs.ParseCertificatesPEM(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cs, nil
}

// grant issues served's token for reader and writes reader's remote config for served. The token
// is written first, so an agent that sees the config finds its token.
func grant(reader, served ClusterDir, ttl time.Duration) (Connection, error) {
	key, err := token.LoadKey(served.SigningKey())
	if err != nil {
		return Connection{}, err
	}
	iss, err := token.NewIssuer(served.Info.Name, key)
	if err != nil {
		return Connection{}, err
	}
	signed, claims, err := iss.Issue(reader.Info.Name, ttl, []string{token.ScopeRead})
	if err != nil {
		return Connection{}, err
	}
	tokenFile := filepath.Join(reader.Remotes(), served.Info.Name+tokenExt)
	if err := os.MkdirAll(reader.Remotes(), 0o755); err != nil {
		return Connection{}, err
	}
	if err := certs.WriteFiles([]certs.File{{Path: tokenFile, Data: []byte(signed + "\n"), Mode: 0o600}}, true); err != nil {
		return Connection{}, err
	}
	agent := reader.AgentCert()
	rel := func(p string) string {
		if r, err := filepath.Rel(reader.Remotes(), p); err == nil {
			return r
		}
		return p
	}
	path, err := WriteRemoteConfig(reader.Remotes(), RemoteConfig{
		Name:      served.Info.Name,
		Address:   served.Info.Address,
		CAFile:    rel(reader.CABundle()),
		CertFile:  rel(agent.Cert),
		KeyFile:   rel(agent.Key),
		TokenFile: filepath.Base(tokenFile),
	})
	if err != nil {
		return Connection{}, err
	}
	return Connection{Reader: reader.Info.Name, Served: served.Info.Name, Config: path, TokenID: claims.ID, ExpiresAt: claims.ExpiresAt.UTC()}, nil
}
