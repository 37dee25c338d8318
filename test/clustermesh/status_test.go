package clustermesh_test

import (
	"encoding/json"
)

// remoteSynced reports whether `clustermesh status -o json` shows the remote cluster connected
// and synced.
func remoteSynced(out, remote string) bool {
	var status struct {
		Clusters []struct {
			Name      string `json:"name"`
			Connected bool   `json:"connected"`
			Synced    bool   `json:"synced"`
		} `json:"clusters"`
	}
	if err := json.Unmarshal([]byte(out), &status); err != nil {
		return false
	}
	for _, c := range status.Clusters {
		if c.Name == remote {
			return c.Connected && c.Synced
		}
	}
	return false
}
