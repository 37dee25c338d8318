package meshtls

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/palisade-mesh/palisade/certs"
)

// SourceOptions name the files of a Source.
type SourceOptions struct {
	// CertFile and KeyFile are this process's certificate and key (PEM); required.
	CertFile, KeyFile string
	// CAFile is the trust bundle: one or more mesh CA certificates (PEM); required. During a CA
	// rotation it holds the old and the new CA.
	CAFile string
	// CheckInterval is the least time between two checks of the files for changes; checks happen
	// when a handshake needs the material, so an idle process does no work. Default one second:
	// a rotated file is in use within a second, and a busy server stats three files at most once
	// a second.
	CheckInterval time.Duration
	// Logger receives reload events. Default slog.Default().
	Logger *slog.Logger
}

// DefaultCheckInterval is the default SourceOptions.CheckInterval.
const DefaultCheckInterval = time.Second

// Source serves the current certificate and trust bundle from files, reloading them when they
// change. A change that does not load (a half-rotated pair, a broken file) is logged and the
// previous material stays in use until the files are fixed. It is safe for concurrent use and
// owns no goroutine.
type Source struct {
	opts SourceOptions

	mu        sync.Mutex
	cur       *material
	stamps    [3]os.FileInfo
	lastCheck time.Time
	lastErr   error
}

// material is one consistent load of the three files.
type material struct {
	cert   tls.Certificate
	id     certs.ID
	roots  *x509.CertPool
	caList []*x509.Certificate
}

// NewSource loads the files once; any problem with them is an error.
func NewSource(opts SourceOptions) (*Source, error) {
	if opts.CertFile == "" || opts.KeyFile == "" || opts.CAFile == "" {
		return nil, fmt.Errorf("mesh TLS source: certificate, key and CA files are all required (got %q, %q, %q)", opts.CertFile, opts.KeyFile, opts.CAFile)
	}
	if opts.CheckInterval <= 0 {
		opts.CheckInterval = DefaultCheckInterval
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s := &Source{opts: opts}
	stamps, err := s.statAll()
	if err != nil {
		return nil, err
	}
	m, err := s.load()
	if err != nil {
		return nil, err
	}
	s.cur, s.stamps, s.lastCheck = m, stamps, time.Now()
	return s, nil
}

// ID is the identity in the current certificate.
func (s *Source) ID() certs.ID { return s.current().id }

// LastReloadError is the error of the last reload attempt, nil when the files on disk are in use.
func (s *Source) LastReloadError() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastErr
}

// Reload checks the files now, regardless of CheckInterval (for a SIGHUP handler, or tests).
func (s *Source) Reload() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checkLocked(time.Now())
	return s.lastErr
}

func (s *Source) current() *material {
	s.mu.Lock()
	defer s.mu.Unlock()
	if now := time.Now(); now.Sub(s.lastCheck) >= s.opts.CheckInterval {
		s.checkLocked(now)
	}
	return s.cur
}

func (s *Source) checkLocked(now time.Time) {
	s.lastCheck = now
	stamps, err := s.statAll()
	if err != nil {
		s.fail(err)
		return
	}
	if !s.changed(stamps) {
		return
	}
	// Remember the new stamps even if the load fails: a half-written rotation is retried when the
	// next file changes, not on every handshake.
	s.stamps = stamps
	m, err := s.load()
	if err != nil {
		s.fail(err)
		return
	}
	s.cur, s.lastErr = m, nil
	s.opts.Logger.Info("mesh TLS material reloaded", "spiffeID", m.id.String(), "notAfter", m.cert.Leaf.NotAfter, "cas", len(m.caList))
}

func (s *Source) fail(err error) {
	if s.lastErr == nil || s.lastErr.Error() != err.Error() {
		s.opts.Logger.Warn("mesh TLS material not reloaded; keeping the previous one", "error", err)
	}
	s.lastErr = err
}

func (s *Source) statAll() ([3]os.FileInfo, error) {
	var out [3]os.FileInfo
	for i, p := range []string{s.opts.CertFile, s.opts.KeyFile, s.opts.CAFile} {
		fi, err := os.Stat(p)
		if err != nil {
			return out, fmt.Errorf("mesh TLS source: %w", err)
		}
		out[i] = fi
	}
	return out, nil
}

func (s *Source) changed(stamps [3]os.FileInfo) bool {
	for i, fi := range stamps {
		old := s.stamps[i]
		if old == nil || !os.SameFile(old, fi) || !old.ModTime().Equal(fi.ModTime()) || old.Size() != fi.Size() {
			return true
		}
	}
	return false
}

func (s *Source) load() (*material, error) {
	pair, err := tls.LoadX509KeyPair(s.opts.CertFile, s.opts.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("load mesh certificate %s with key %s: %w", s.opts.CertFile, s.opts.KeyFile, err)
	}
	id, err := certs.LeafID(pair.Leaf)
	if err != nil {
		return nil, fmt.Errorf("load mesh certificate %s: %w", s.opts.CertFile, err)
	}
	caPEM, err := os.ReadFile(s.opts.CAFile)
	if err != nil {
		return nil, fmt.Errorf("load mesh CA bundle: %w", err)
	}
	caList, err := certs.ParseCertificatesPEM(caPEM)
	if err != nil {
		return nil, fmt.Errorf("load mesh CA bundle %s: %w", s.opts.CAFile, err)
	}
	roots := x509.NewCertPool()
	for _, ca := range caList {
		if !ca.IsCA {
			return nil, fmt.Errorf("load mesh CA bundle %s: %q is not a CA certificate", s.opts.CAFile, ca.Subject)
		}
		roots.AddCert(ca)
	}
	return &material{cert: pair, id: id, roots: roots, caList: caList}, nil
}
