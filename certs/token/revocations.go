package token

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/palisade-mesh/palisade/certs"
)

// Revocations is the set of revoked token IDs, read from a file with one ID per line ('#' starts
// a comment). The file is re-read when it changes, checked at most once per check interval when
// Revoked is called. A change that does not parse is logged and the previous list stays in force,
// so a broken edit never un-revokes a token. A file that does not exist is an empty list.
type Revocations struct {
	path          string
	checkInterval time.Duration
	logger        *slog.Logger

	mu        sync.Mutex
	ids       map[string]struct{}
	stamp     os.FileInfo
	lastCheck time.Time
	lastErr   error
}

// RevocationsOptions configure OpenRevocations.
type RevocationsOptions struct {
	// CheckInterval is the least time between two checks of the file for changes. Default one
	// second: a revocation takes effect within a second, and the file is stat'ed at most once a
	// second however many calls arrive.
	CheckInterval time.Duration
	// Logger receives reload events. Default slog.Default().
	Logger *slog.Logger
}

// OpenRevocations reads the revocation list at path.
func OpenRevocations(path string, opts RevocationsOptions) (*Revocations, error) {
	if opts.CheckInterval <= 0 {
		opts.CheckInterval = time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	r := &Revocations{path: path, checkInterval: opts.CheckInterval, logger: opts.Logger, ids: map[string]struct{}{}}
	if err := r.Reload(); err != nil {
		return nil, err
	}
	return r, nil
}

// Revoked reports whether id is on the list.
func (r *Revocations) Revoked(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if now := time.Now(); now.Sub(r.lastCheck) >= r.checkInterval {
		r.checkLocked(now)
	}
	_, ok := r.ids[id]
	return ok
}

// Len is the number of revoked IDs in force.
func (r *Revocations) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.ids)
}

// Reload checks the file now and returns the error of the attempt (nil when the file is in force).
func (r *Revocations) Reload() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.checkLocked(time.Now())
	return r.lastErr
}

func (r *Revocations) checkLocked(now time.Time) {
	r.lastCheck = now
	fi, err := os.Stat(r.path)
	if errors.Is(err, fs.ErrNotExist) && r.stamp == nil {
		r.lastErr = nil // never had a list: nothing revoked yet
		return
	}
	if err != nil {
		r.failLocked(fmt.Errorf("read revocation list: %w", err))
		return
	}
	if r.stamp != nil && os.SameFile(r.stamp, fi) && r.stamp.ModTime().Equal(fi.ModTime()) && r.stamp.Size() == fi.Size() {
		return
	}
	r.stamp = fi
	data, err := os.ReadFile(r.path)
	if err != nil {
		r.failLocked(fmt.Errorf("read revocation list: %w", err))
		return
	}
	ids, err := ParseRevocations(data)
	if err != nil {
		r.failLocked(fmt.Errorf("read revocation list %s: %w", r.path, err))
		return
	}
	r.ids, r.lastErr = ids, nil
	r.logger.Info("token revocation list loaded", "path", r.path, "revoked", len(ids))
}

func (r *Revocations) failLocked(err error) {
	if r.lastErr == nil || r.lastErr.Error() != err.Error() {
		r.logger.Warn("token revocation list not reloaded; the previous list stays in force", "error", err)
	}
	r.lastErr = err
}

// tokenIDRE matches the IDs Issue makes and any similar opaque ID: base64url characters.
var tokenIDRE = lazyRegexp(`^[A-Za-z0-9_-]{1,128}$`)

// ParseRevocations parses a revocation list: one token ID per line, blank lines and '#' comments
// ignored.
func ParseRevocations(data []byte) (map[string]struct{}, error) {
	ids := map[string]struct{}{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line, _, _ := strings.Cut(sc.Text(), "#")
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		if !tokenIDRE().MatchString(line) {
			return nil, fmt.Errorf("line %d: %q is not a token ID", n, line)
		}
		ids[line] = struct{}{}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return ids, nil
}

// Revoke adds id to the revocation list at path, creating it if needed. It reports false when id
// was already revoked. The file is replaced atomically, so a verifier never reads half of it.
func Revoke(path, id, note string, now time.Time) (bool, error) {
	if !tokenIDRE().MatchString(id) {
		return false, fmt.Errorf("revoke token: %q is not a token ID", id)
	}
	data, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("revoke token %s: %w", id, err)
	}
	ids, err := ParseRevocations(data)
	if err != nil {
		return false, fmt.Errorf("revoke token %s: %s: %w", id, path, err)
	}
	if _, ok := ids[id]; ok {
		return false, nil
	}
	if len(data) > 0 && !bytes.HasSuffix(data, []byte("\n")) {
		data = append(data, '\n')
	}
	line := fmt.Sprintf("%s # revoked %s", id, now.UTC().Format(time.RFC3339))
	if note = strings.Join(strings.Fields(note), " "); note != "" {
		line += ": " + note
	}
	data = append(data, line+"\n"...)
	if err := certs.WriteFiles([]certs.File{{Path: path, Data: data, Mode: 0o644}}, true); err != nil {
		return false, fmt.Errorf("revoke token %s: %w", id, err)
	}
	return true, nil
}

// lazyRegexp compiles expr on first use: a bounded repetition such as {0,62} compiles into many
// states, and compiling at package initialisation would slow the start of every CLI command.
func lazyRegexp(expr string) func() *regexp.Regexp {
	return sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(expr) })
}
