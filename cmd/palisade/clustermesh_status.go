package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/timestamppb"

	apiv1 "github.com/palisade-mesh/palisade/api/v1"
)

// clustermeshStatusView is what `clustermesh status -o json|yaml` prints.
type clustermeshStatusView struct {
	ConfigDir      string              `json:"configDir"`
	ConfigDirError string              `json:"configDirError,omitempty"`
	FullWatch      bool                `json:"fullWatch"`
	Clusters       []remoteClusterView `json:"clusters"`
}

type remoteClusterView struct {
	Name          string     `json:"name"`
	ClusterID     uint32     `json:"clusterID"`
	Address       string     `json:"address"`
	Connected     bool       `json:"connected"`
	Synced        bool       `json:"synced"`
	Stale         bool       `json:"stale"`
	StaleUntil    *time.Time `json:"staleUntil,omitempty"`
	Identities    uint32     `json:"identities"`
	Endpoints     uint32     `json:"endpoints"`
	Nodes         uint32     `json:"nodes"`
	Selectors     uint32     `json:"selectors"`
	Rejected      uint64     `json:"rejected,omitempty"`
	LastSync      *time.Time `json:"lastSync,omitempty"`
	LastError     string     `json:"lastError,omitempty"`
	LastErrorTime *time.Time `json:"lastErrorTime,omitempty"`
	ConfigError   string     `json:"configError,omitempty"`
	TokenExpiry   *time.Time `json:"tokenExpiry,omitempty"`
	Version       string     `json:"version,omitempty"`
	ConfigFile    string     `json:"configFile"`
}

func newClustermeshStatusCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the remote clusters this node's agent imports from",
		Long: `Status asks the local agent about each remote cluster configured in its --clustermesh-config
directory: whether it is connected and synced, how many identities, endpoints (ipcache entries)
and nodes it imported, when it last synced, when its access token expires, and the last error.`,
		Args: cobra.NoArgs,
	}
	client := addAgentClientFlags(cmd)
	out := addOutputFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		var st *apiv1.ClusterMeshStatusResponse
		if err := client.call(cmd.Context(), func(ctx context.Context, c apiv1.AgentClient) (err error) {
			st, err = c.ClusterMeshStatus(ctx, &apiv1.ClusterMeshStatusRequest{})
			return err
		}); err != nil {
			return fmt.Errorf("clustermesh status: %w", err)
		}
		view := clustermeshStatusFromProto(st)
		if *out == "table" && len(view.Clusters) == 0 {
			w := cmd.OutOrStdout()
			switch {
			case view.ConfigDir == "":
				fmt.Fprintln(w, "No remote cluster configured: this agent runs without --clustermesh-config.")
			case view.ConfigDirError != "":
				fmt.Fprintf(w, "No remote cluster: the directory %s cannot be read: %s\n", view.ConfigDir, view.ConfigDirError)
			default:
				fmt.Fprintf(w, "No remote cluster configured: %s holds no <name>.yaml (see `palisade clustermesh connect`).\n", view.ConfigDir)
			}
			return nil
		}
		return out.render(cmd.OutOrStdout(), view, func(w io.Writer) { writeClustermeshTable(w, view, time.Now()) })
	}
	return cmd
}

func clustermeshStatusFromProto(st *apiv1.ClusterMeshStatusResponse) clustermeshStatusView {
	view := clustermeshStatusView{ConfigDir: st.GetConfigDir(), ConfigDirError: st.GetConfigDirError(), FullWatch: st.GetFullWatch(), Clusters: []remoteClusterView{}}
	for _, c := range st.GetClusters() {
		view.Clusters = append(view.Clusters, remoteClusterView{
			Name: c.GetName(), ClusterID: c.GetClusterId(), Address: c.GetAddress(),
			Connected: c.GetConnected(), Synced: c.GetSynced(), Stale: c.GetStale(), StaleUntil: optionalTime(c.GetStaleUntil()),
			Identities: c.GetIdentities(), Endpoints: c.GetEndpoints(), Nodes: c.GetNodes(),
			Selectors: c.GetSelectors(), Rejected: c.GetRejected(),
			LastSync: optionalTime(c.GetLastSync()), LastError: c.GetLastError(), LastErrorTime: optionalTime(c.GetLastErrorTime()),
			ConfigError: c.GetConfigError(), TokenExpiry: optionalTime(c.GetTokenExpiry()), Version: c.GetVersion(), ConfigFile: c.GetConfigFile(),
		})
	}
	return view
}

func optionalTime(ts *timestamppb.Timestamp) *time.Time {
	if ts == nil {
		return nil
	}
	t := ts.AsTime().UTC()
	return &t
}

func writeClustermeshTable(w io.Writer, view clustermeshStatusView, now time.Time) {
	fmt.Fprintln(w, "CLUSTER\tID\tADDRESS\tCONNECTED\tSYNCED\tIDENTITIES\tENDPOINTS\tNODES\tLAST SYNC\tTOKEN EXPIRES\tLAST ERROR")
	for _, c := range view.Clusters {
		id := "-"
		if c.ClusterID != 0 {
			id = fmt.Sprint(c.ClusterID)
		}
		synced := yesNo(c.Synced)
		if c.Stale && c.StaleUntil != nil {
			synced = "stale until " + c.StaleUntil.Format(time.RFC3339)
		}
		lastErr := c.LastError
		if lastErr == "" {
			lastErr = "-"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s\t%s\t%s\n", c.Name, id, c.Address, yesNo(c.Connected), synced,
			c.Identities, c.Endpoints, c.Nodes, ago(c.LastSync, now), tokenExpiry(c.TokenExpiry, now), lastErr)
	}
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// ago says how long ago t was, "never" when unset.
func ago(t *time.Time, now time.Time) string {
	if t == nil {
		return "never"
	}
	return now.Sub(*t).Round(time.Second).String() + " ago"
}

// tokenExpiry shows when a token expires, and says so plainly once it has.
func tokenExpiry(t *time.Time, now time.Time) string {
	switch {
	case t == nil:
		return "-"
	case !t.After(now):
		return "EXPIRED " + t.Format(time.RFC3339)
	}
	return fmt.Sprintf("%s (in %s)", t.Format(time.RFC3339), t.Sub(now).Round(time.Minute))
}
