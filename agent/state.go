package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/palisade-mesh/palisade/identity"
)

// endpointRecord is what the agent remembers of an endpoint across restarts. Everything else
// (identity references, ipcache entries, computed policy) is derived again on restore.
type endpointRecord struct {
	ID         uint32      `json:"id"`
	Name       string      `json:"name"`
	Namespace  string      `json:"namespace"`
	NetnsPath  string      `json:"netnsPath"`
	HostIfName string      `json:"hostIfName"`
	IPv4       netip.Addr  `json:"ipv4"`
	Labels     []string    `json:"labels"` // the endpoint's own labels, as given at creation
	Identity   identity.ID `json:"identity"`
}

// stateStore keeps one JSON file per endpoint under <state dir>/endpoints.
type stateStore struct{ dir string }

func newStateStore(stateDir string) (*stateStore, error) {
	dir := filepath.Join(stateDir, "endpoints")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("endpoint state dir: %w", err)
	}
	return &stateStore{dir: dir}, nil
}

func (s *stateStore) path(id uint32) string {
	return filepath.Join(s.dir, strconv.FormatUint(uint64(id), 10)+".json")
}

// save writes atomically so a crash leaves the old or the new record, never a torn one.
func (s *stateStore) save(r endpointRecord) error {
	raw, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encode endpoint %d: %w", r.ID, err)
	}
	tmp := s.path(r.ID) + ".tmp"
	if err := os.WriteFile(tmp, raw, 0o600); err != nil {
		return fmt.Errorf("save endpoint %d: %w", r.ID, err)
	}
	if err := os.Rename(tmp, s.path(r.ID)); err != nil {
		return fmt.Errorf("save endpoint %d: %w", r.ID, err)
	}
	return nil
}

func (s *stateStore) remove(id uint32) error {
	if err := os.Remove(s.path(id)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove endpoint %d state: %w", id, err)
	}
	return nil
}

// load returns every saved record; unreadable files are reported, not fatal, so one bad file does
// not keep the other endpoints from being restored.
func (s *stateStore) load() ([]endpointRecord, []error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, []error{fmt.Errorf("read endpoint state: %w", err)}
	}
	var out []endpointRecord
	var errs []error
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		raw, err := os.ReadFile(filepath.Join(s.dir, e.Name()))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		var r endpointRecord
		if err := json.Unmarshal(raw, &r); err != nil {
			errs = append(errs, fmt.Errorf("endpoint state %s: %w", e.Name(), err))
			continue
		}
		out = append(out, r)
	}
	return out, errs
}
