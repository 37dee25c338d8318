package remote

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/palisade-mesh/palisade/certs/token"
	"github.com/palisade-mesh/palisade/clustermesh"
)

// tokenCheckInterval is the least time between two looks at the token file: a renewed token is
// in use within a second, and a busy client stats the file at most once a second.
const tokenCheckInterval = time.Second

// tokenFile sends the access token of a file with every call (gRPC per-RPC credentials), reading
// the file again when it changes. A change that cannot be read (a half-written or emptied file)
// is logged and the previous token stays in use.
type tokenFile struct {
	path string
	log  *slog.Logger

	mu        sync.Mutex
	token     string
	expiry    time.Time
	modTime   time.Time
	size      int64
	lastCheck time.Time
	lastErr   error
}

func openTokenFile(path string, log *slog.Logger) (*tokenFile, error) {
	t := &tokenFile{path: path, log: log}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("access token: %w", err)
	}
	if err := t.load(fi); err != nil {
		return nil, err
	}
	t.lastCheck = time.Now()
	return t, nil
}

func (t *tokenFile) load(fi os.FileInfo) error {
	tok, err := clustermesh.ReadToken(t.path)
	if err != nil {
		return err
	}
	t.token, t.expiry = tok, tokenExpiry(tok)
	t.modTime, t.size = fi.ModTime(), fi.Size()
	return nil
}

// tokenExpiry reads a token's expiry without verifying it: the client cannot verify (only the
// serving cluster holds the key) and only shows the date. Zero when the token does not decode.
func tokenExpiry(raw string) time.Time {
	claims := &token.Claims{}
	if _, _, err := jwt.NewParser().ParseUnverified(raw, claims); err != nil || claims.ExpiresAt == nil {
		return time.Time{}
	}
	return claims.ExpiresAt.UTC()
}

// current returns the token in use, looking at the file first if a second has passed.
func (t *tokenFile) current() (string, time.Time, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if now := time.Now(); now.Sub(t.lastCheck) >= tokenCheckInterval {
		t.lastCheck = now
		fi, err := os.Stat(t.path)
		if err == nil && (!fi.ModTime().Equal(t.modTime) || fi.Size() != t.size) {
			err = t.load(fi)
			if err == nil {
				t.log.Info("access token reloaded", "file", t.path, "expires", t.expiry)
			}
		}
		if err != nil && (t.lastErr == nil || t.lastErr.Error() != err.Error()) {
			t.log.Warn("access token file unusable; keeping the previous token", "file", t.path, "error", err)
		}
		t.lastErr = err
	}
	return t.token, t.expiry, t.lastErr
}

// GetRequestMetadata implements credentials.PerRPCCredentials.
func (t *tokenFile) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	tok, _, _ := t.current()
	return map[string]string{clustermesh.AuthorizationKey: "Bearer " + tok}, nil
}

// RequireTransportSecurity implements credentials.PerRPCCredentials: the token never travels in
// clear text.
func (*tokenFile) RequireTransportSecurity() bool { return true }
