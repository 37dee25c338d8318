package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	apiv1 "github.com/palisade-mesh/palisade/api/v1"
)

func TestClustermeshStatus_TableAndJSON(t *testing.T) {
	now := time.Date(2026, 11, 23, 16, 0, 0, 0, time.UTC)
	st := &apiv1.ClusterMeshStatusResponse{ConfigDir: "/etc/palisade/clustermesh", Clusters: []*apiv1.RemoteClusterStatus{
		{Name: "cluster2", ClusterId: 2, Address: "10.99.0.2:4245", Connected: true, Synced: true, Identities: 3, Endpoints: 5, Nodes: 2,
			LastSync: timestamppb.New(now.Add(-90 * time.Second)), TokenExpiry: timestamppb.New(now.Add(24 * time.Hour)), ConfigFile: "/etc/palisade/clustermesh/cluster2.yaml"},
		{Name: "cluster3", Address: "10.99.0.3:4245", Stale: true, StaleUntil: timestamppb.New(now.Add(4 * time.Minute)), Identities: 1,
			LastError: "ask 10.99.0.3:4245 who it is (Info): connection refused", TokenExpiry: timestamppb.New(now.Add(-time.Hour))},
	}}
	view := clustermeshStatusFromProto(st)
	var b bytes.Buffer
	tw := tabwriter.NewWriter(&b, 0, 0, 3, ' ', 0)
	writeClustermeshTable(tw, view, now)
	tw.Flush()
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("table:\n%s", b.String())
	}
	for i, want := range [][]string{
		{"CLUSTER", "CONNECTED", "SYNCED", "IDENTITIES", "ENDPOINTS", "LAST SYNC", "TOKEN EXPIRES", "LAST ERROR"},
		{"cluster2", " 2 ", "10.99.0.2:4245", "yes", " 3 ", " 5 ", "1m30s ago", "2026-11-24T16:00:00Z (in 24h0m0s)"},
		{"cluster3", " - ", "stale until 2026-11-23T16:04:00Z", "never", "EXPIRED 2026-11-23T15:00:00Z", "connection refused"},
	} {
		for _, w := range want {
			if !strings.Contains(lines[i], w) {
				t.Errorf("line %d %q lacks %q", i, lines[i], w)
			}
		}
	}

	raw, err := json.Marshal(view)
	if err != nil {
		t.Fatal(err)
	}
	var back clustermeshStatusView
	if err := json.Unmarshal(raw, &back); err != nil {
		t.Fatal(err)
	}
	if got := back.Clusters[0]; got.Name != "cluster2" || !got.Synced || got.Endpoints != 5 || !got.LastSync.Equal(now.Add(-90*time.Second)) {
		t.Fatalf("json round trip: %+v", got)
	}
	if !strings.Contains(string(raw), `"tokenExpiry":"2026-11-24T16:00:00Z"`) {
		t.Fatalf("json times are not RFC 3339: %s", raw)
	}
}
