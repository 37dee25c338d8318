package identity

import (
	"strings"
	"testing"
)

func TestClusterConfig_Validate(t *testing.T) {
	cases := []struct {
		name    string
		cfg     ClusterConfig
		wantErr string
	}{
		{name: "default layout", cfg: ClusterConfig{Name: "cluster1", ID: 1}},
		{name: "last ID of 255", cfg: ClusterConfig{Name: "c", ID: 255, MaxConnectedClusters: 255}},
		{name: "511 clusters", cfg: ClusterConfig{Name: "c-511", ID: 511, MaxConnectedClusters: 511}},
		{name: "ID 0", cfg: ClusterConfig{Name: "c", ID: 0}, wantErr: "cluster ID 0 out of range 1..255"},
		{name: "ID 256 with 255 clusters", cfg: ClusterConfig{Name: "c", ID: 256}, wantErr: "cluster ID 256 out of range 1..255"},
		{name: "ID 512 with 511 clusters", cfg: ClusterConfig{Name: "c", ID: 512, MaxConnectedClusters: 511}, wantErr: "out of range 1..511"},
		{name: "unknown layout", cfg: ClusterConfig{Name: "c", ID: 1, MaxConnectedClusters: 1023}, wantErr: "must be 255 or 511"},
		{name: "empty name", cfg: ClusterConfig{ID: 1}, wantErr: `cluster name ""`},
		{name: "upper case", cfg: ClusterConfig{Name: "Cluster1", ID: 1}, wantErr: `cluster name "Cluster1"`},
		{name: "too long", cfg: ClusterConfig{Name: strings.Repeat("a", 33), ID: 1}, wantErr: "1..32 lowercase"},
		{name: "trailing dash", cfg: ClusterConfig{Name: "c-", ID: 1}, wantErr: `cluster name "c-"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.cfg.Validate()
			if c.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Fatalf("err = %v, want %q", err, c.wantErr)
			}
		})
	}
}

func TestCompareClusterConfig_NamesBothValues(t *testing.T) {
	base := ClusterConfig{Name: "east", ID: 3, MaxConnectedClusters: 255}
	cases := []struct {
		name  string
		other ClusterConfig
		want  []string
	}{
		{"other name", ClusterConfig{Name: "west", ID: 3, MaxConnectedClusters: 255}, []string{`"east"`, `"west"`}},
		{"other ID", ClusterConfig{Name: "east", ID: 4, MaxConnectedClusters: 255}, []string{"ID 3", "ID 4"}},
		{"other layout", ClusterConfig{Name: "east", ID: 3, MaxConnectedClusters: 511}, []string{"255", "511", "cannot change"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := compareClusterConfig(base, c.other)
			if err == nil {
				t.Fatal("mismatch accepted")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %s", err, w)
				}
			}
		})
	}
	same := base
	same.Capabilities = []string{"x"}
	if err := compareClusterConfig(base, same); err != nil {
		t.Fatalf("capabilities compared: %v", err)
	}
}
