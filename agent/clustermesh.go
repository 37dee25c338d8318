package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/palisade-mesh/palisade/clustermesh"
	"github.com/palisade-mesh/palisade/clustermesh/remote"
	"github.com/palisade-mesh/palisade/identity"
	"github.com/palisade-mesh/palisade/policy/api"
)

// meshConfigPollInterval is how often the clustermesh config directory is read: a remote
// cluster's file added, changed or removed takes effect within a second.
const meshConfigPollInterval = time.Second

// meshOptions configure the agent's clustermesh importer.
type meshOptions struct {
	// dir holds one <name>.yaml per remote cluster; empty: no clustermesh.
	dir string
	// The local cluster, which no remote cluster may clash with.
	localName string
	localID   uint32
	layout    identity.Layout
	// syncTimeout bounds waitSynced; staleGrace is remote.Options.StaleGrace.
	syncTimeout, staleGrace time.Duration
	// fullWatch imports every identity of the remote clusters instead of the ones the local
	// policies may select.
	fullWatch bool
	// selectorsFor lists the selectors of the local policies that may select a remote cluster's
	// identities (policy.Engine.SelectorsFor).
	selectorsFor func(cluster string) [][]api.Requirement
	pollInterval time.Duration
	// clientOptions, when set, adjusts each remote client's options (tests shorten backoffs).
	clientOptions func(*remote.Options)
	log           *slog.Logger
}

// clusterMesh imports the remote clusters configured in a directory: one remote.Client per file,
// started, restarted and stopped as files appear, change and go away.
type clusterMesh struct {
	opts meshOptions
	sink meshSink

	scanned     chan struct{} // closed after the first look at the directory
	scannedOnce sync.Once

	mu      sync.Mutex
	remotes map[string]*remoteCluster
	ipOwner map[netip.Prefix]string // which remote cluster an imported ipcache prefix came from
	dirErr  string
}

// remoteCluster is one configured remote cluster and what it put into the agent.
type remoteCluster struct {
	name string
	file string
	raw  []byte // the file as last read, to notice changes

	// Guarded by clusterMesh.mu.
	client    *remote.Client // nil while the file has never loaded
	cfg       clustermesh.RemoteConfig
	stop      context.CancelFunc
	done      chan struct{}
	configErr string       // why the file as it is now is not in use
	info      *remote.Info // what it said it is when last accepted (see check)
	// claim is set by check when it accepts the cluster and cleared when that client's Run has
	// returned: from acceptance on, the cluster's name and ID are taken, before it is connected.
	claim *claimToken

	// held counts the entries this remote cluster holds in the agent (imported), refreshed after
	// each batch and after a withdrawal; holdsClaim reads it under clusterMesh.mu, which must
	// never wait for imported.mu (claimPrefix takes clusterMesh.mu under imported.mu).
	held atomic.Int64

	synced     chan struct{} // closed at its first sync
	syncedOnce sync.Once

	// imported is what this remote cluster holds in the agent; only its client's goroutine and,
	// once that stopped, its removal touch it.
	imported imported
}

func newClusterMesh(opts meshOptions, sink meshSink) *clusterMesh {
	if opts.pollInterval <= 0 {
		opts.pollInterval = meshConfigPollInterval
	}
	if opts.log == nil {
		opts.log = slog.Default()
	}
	return &clusterMesh{
		opts:    opts,
		sink:    sink,
		scanned: make(chan struct{}),
		remotes: map[string]*remoteCluster{},
		ipOwner: map[netip.Prefix]string{},
	}
}

func (m *clusterMesh) enabled() bool { return m.opts.dir != "" }

// run polls the config directory until ctx ends, after ready is closed (the local policies are
// in, so the first watch of each remote cluster asks for the right selectors) or the sync
// timeout passed. On return every client has stopped; what they imported stays in force.
func (m *clusterMesh) run(ctx context.Context, ready <-chan struct{}) {
	defer m.scannedOnce.Do(func() { close(m.scanned) })
	if !m.enabled() {
		return
	}
	wait := time.NewTimer(m.opts.syncTimeout)
	select {
	case <-ctx.Done():
		wait.Stop()
		return
	case <-ready:
	case <-wait.C:
		m.opts.log.Warn("starting clustermesh before the local policies synced")
	}
	wait.Stop()
	defer m.stopAll()
	t := time.NewTicker(m.opts.pollInterval)
	defer t.Stop()
	for {
		m.scan(ctx)
		m.scannedOnce.Do(func() { close(m.scanned) })
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// scan reconciles the running remote clusters with the directory.
func (m *clusterMesh) scan(ctx context.Context) {
	files, err := m.configFiles()
	m.mu.Lock()
	if err != nil {
		if m.dirErr != err.Error() {
			m.opts.log.Error("read clustermesh config directory; keeping the remote clusters as they are", "dir", m.opts.dir, "error", err)
		}
		m.dirErr = err.Error()
		m.mu.Unlock()
		return
	}
	m.dirErr = ""
	var gone []*remoteCluster
	for name, rc := range m.remotes {
		if _, ok := files[name]; !ok {
			gone = append(gone, rc)
		}
	}
	m.mu.Unlock()
	for _, rc := range gone {
		m.remove(rc)
	}
	for name, path := range files {
		m.load(ctx, name, path)
	}
}

// configFiles lists <name>.yaml in the directory. A missing directory holds no remote cluster.
func (m *clusterMesh) configFiles() (map[string]string, error) {
	entries, err := os.ReadDir(m.opts.dir)
	if errors.Is(err, os.ErrNotExist) {
		return map[string]string{}, nil
	}
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, e := range entries {
		n := e.Name()
		// Dot files are the temporary files of an atomic replace (clustermesh.WriteRemoteConfig).
		if e.IsDir() || strings.HasPrefix(n, ".") || !strings.HasSuffix(n, clustermesh.RemoteConfigExt) {
			continue
		}
		out[strings.TrimSuffix(n, clustermesh.RemoteConfigExt)] = filepath.Join(m.opts.dir, n)
	}
	return out, nil
}

// load starts the remote cluster of a file, or restarts it when the file changed. A file that
// does not load is reported and the running client, if any, keeps going with the previous one.
// Only run's goroutine calls it, so it is the only writer of a remoteCluster's configuration.
func (m *clusterMesh) load(ctx context.Context, name, path string) {
	raw, err := os.ReadFile(path)
	m.mu.Lock()
	rc, known := m.remotes[name]
	if !known {
		rc = &remoteCluster{name: name, file: path, synced: make(chan struct{}), imported: newImported()}
		m.remotes[name] = rc
	}
	// A file that loaded and did not change needs nothing; a broken one is retried every poll,
	// since what it names (certificates, token) may appear later.
	unchanged := err == nil && rc.client != nil && rc.configErr == "" && bytes.Equal(raw, rc.raw)
	running, prev := rc.client != nil, rc.cfg
	m.mu.Unlock()
	if unchanged {
		return
	}
	var (
		cfg    clustermesh.RemoteConfig
		client *remote.Client
	)
	m.mu.Lock()
	previous := rc.client
	m.mu.Unlock()
	token := &claimToken{cluster: name}
	if err == nil {
		cfg, err = clustermesh.LoadRemoteConfig(path)
	}
	if err == nil && running && cfg == prev {
		m.mu.Lock() // the same configuration, reformatted: keep the connection
		rc.raw, rc.configErr = raw, ""
		m.mu.Unlock()
		return
	}
	if err == nil {
		client, err = remote.New(m.clientOptions(rc, cfg, previous, token))
	}
	m.mu.Lock()
	if err != nil {
		if rc.configErr != err.Error() {
			msg := "remote cluster config unusable"
			if running {
				msg += "; keeping the previous connection"
			}
			m.opts.log.Error(msg, "cluster", name, "file", path, "error", err)
		}
		rc.configErr, rc.raw = err.Error(), raw
		m.mu.Unlock()
		return
	}
	oldStop, oldDone := rc.stop, rc.done
	m.mu.Unlock()
	if running {
		m.opts.log.Info("remote cluster config changed; reconnecting", "cluster", name, "address", cfg.Address)
		oldStop()
		<-oldDone
	} else {
		m.opts.log.Info("remote cluster configured", "cluster", name, "address", cfg.Address)
	}
	cctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	m.mu.Lock()
	rc.client, rc.cfg, rc.stop, rc.done, rc.raw, rc.configErr = client, cfg, stop, done, raw, ""
	m.mu.Unlock()
	go func() {
		defer close(done)
		_ = client.Run(cctx)
		m.mu.Lock()
		if rc.claim == token {
			rc.claim = nil
		}
		m.mu.Unlock()
	}()
}

// clientOptions makes the options of a remote cluster's client. A client replacing previous
// (the file changed) starts from what previous delivered, so its first sync delivers only the
// differences and, should it never sync, those entries go stale and are withdrawn as usual.
func (m *clusterMesh) clientOptions(rc *remoteCluster, cfg clustermesh.RemoteConfig, previous *remote.Client, token *claimToken) remote.Options {
	opts := remote.Options{
		Config:    cfg,
		Consumer:  &countingConsumer{next: &meshConsumer{m: m, rc: rc}, rc: rc},
		Selectors: m.selectors(rc.name),
		Check: func(info remote.Info) error {
			return m.check(rc, token, info)
		},
		Layout:     m.opts.layout,
		StaleGrace: m.opts.staleGrace,
		Logger:     m.opts.log,
	}
	if previous != nil {
		// Run of the new client starts after previous's Run returned (load waits for it).
		opts.Initial = previous.Delivered
	}
	if m.opts.clientOptions != nil {
		m.opts.clientOptions(&opts)
	}
	return opts
}

// countingConsumer keeps remoteCluster.held up to date after each batch.
type countingConsumer struct {
	next remote.Consumer
	rc   *remoteCluster
}

func (c *countingConsumer) Apply(ch remote.Changes) {
	c.next.Apply(ch)
	c.rc.recount()
}

func (rc *remoteCluster) recount() {
	ids, ips, nodes := rc.imported.counts()
	rc.held.Store(int64(ids + ips + nodes))
}

// noRemoteIdentity selects no identity of a remote cluster (each carries the cluster label): the
// watch of a cluster no local policy selects brings its nodes only.
var noRemoteIdentity = []api.Requirement{{Source: identity.SourceK8s, Key: identity.LabelCluster, Op: api.OpDoesNotExist}}

func (m *clusterMesh) selectors(name string) func() [][]api.Requirement {
	if m.opts.fullWatch {
		return nil
	}
	return func() [][]api.Requirement {
		sels := m.opts.selectorsFor(name)
		if len(sels) == 0 {
			return [][]api.Requirement{noRemoteIdentity}
		}
		return sels
	}
}

// claimToken identifies one client's claim on its cluster's name and ID (see check).
type claimToken struct{ cluster string }

// check refuses a remote cluster whose name or ID is this cluster's or another remote cluster's
// that holds a claim. Accepting records what it said and the claim of the client asking (token),
// under the same lock, so two remote clusters connecting at once with the same ID cannot both
// pass.
func (m *clusterMesh) check(rc *remoteCluster, token *claimToken, info remote.Info) error {
	if info.Cluster == m.opts.localName {
		return fmt.Errorf("cluster %q (ID %d) has the name of this cluster %q (ID %d): cluster names must be unique in the mesh", info.Cluster, info.ClusterID, m.opts.localName, m.opts.localID)
	}
	if info.ClusterID == m.opts.localID {
		return fmt.Errorf("cluster %q (ID %d) clashes with this cluster %q (ID %d): cluster IDs must be unique in the mesh", info.Cluster, info.ClusterID, m.opts.localName, m.opts.localID)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	names := make([]string, 0, len(m.remotes))
	for other := range m.remotes {
		names = append(names, other)
	}
	slices.Sort(names)
	for _, other := range names {
		orc := m.remotes[other]
		if orc == rc || orc.info == nil || !orc.holdsClaim() {
			continue
		}
		if orc.info.ClusterID == info.ClusterID {
			return fmt.Errorf("cluster %q (ID %d) clashes with connected cluster %q (ID %d): cluster IDs must be unique in the mesh", info.Cluster, info.ClusterID, orc.info.Cluster, orc.info.ClusterID)
		}
		if orc.info.Cluster == info.Cluster {
			return fmt.Errorf("cluster %q (ID %d) clashes with connected cluster %q (ID %d) configured in %s: cluster names must be unique in the mesh", info.Cluster, info.ClusterID, orc.info.Cluster, orc.info.ClusterID, orc.file)
		}
	}
	rc.info, rc.claim = &info, token
	return nil
}

// holdsClaim reports whether a remote cluster still counts as connected for the uniqueness
// check: a client of it was accepted and is still running, or its entries are still in force.
// Called with clusterMesh.mu held.
func (rc *remoteCluster) holdsClaim() bool {
	return rc.claim != nil || rc.held.Load() > 0
}

// remove stops a remote cluster whose file went away and withdraws everything it imported. It
// stays known (and keeps its claim on its name and ID) until its entries are gone, so another
// cluster with the same ID cannot import identities that the withdrawal would then delete.
func (m *clusterMesh) remove(rc *remoteCluster) {
	m.mu.Lock()
	stop, done := rc.stop, rc.done
	m.mu.Unlock()
	if stop != nil {
		stop()
		<-done
	}
	m.withdraw(rc)
	rc.recount()
	m.mu.Lock()
	if m.remotes[rc.name] == rc {
		delete(m.remotes, rc.name)
	}
	m.mu.Unlock()
	m.opts.log.Info("remote cluster removed; its entries are withdrawn", "cluster", rc.name)
}

// stopAll stops every client on shutdown. Imported entries stay: the datapath keeps enforcing
// while the agent is down.
func (m *clusterMesh) stopAll() {
	m.mu.Lock()
	var dones []chan struct{}
	for _, rc := range m.remotes {
		if rc.stop != nil {
			rc.stop()
			dones = append(dones, rc.done)
		}
	}
	m.mu.Unlock()
	for _, d := range dones {
		<-d
	}
}

// waitSynced waits until every remote cluster configured at start-up has delivered its state once,
// at most the sync timeout, so endpoints restored at start-up get policy that includes the remote
// identities they had before the restart.
func (m *clusterMesh) waitSynced(ctx context.Context) error {
	if !m.enabled() {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, m.opts.syncTimeout)
	defer cancel()
	select {
	case <-m.scanned:
	case <-ctx.Done():
		return fmt.Errorf("wait for the clustermesh configuration: %w", ctx.Err())
	}
	m.mu.Lock()
	waits := map[string]chan struct{}{}
	for name, rc := range m.remotes {
		if rc.client != nil {
			waits[name] = rc.synced
		}
	}
	m.mu.Unlock()
	for _, c := range waits {
		select {
		case <-c:
		case <-ctx.Done():
			var pending []string
			for name, c := range waits {
				select {
				case <-c:
				default:
					pending = append(pending, name)
				}
			}
			slices.Sort(pending)
			return fmt.Errorf("remote clusters not synced within %s: %s", m.opts.syncTimeout, strings.Join(pending, ", "))
		}
	}
	return nil
}

// policiesChanged is called after the local policies changed: each remote cluster whose selector
// set changed restarts its watch with the new set.
func (m *clusterMesh) policiesChanged() {
	if m.opts.fullWatch {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, rc := range m.remotes {
		if rc.client != nil {
			rc.client.UpdateSelectors()
		}
	}
}
