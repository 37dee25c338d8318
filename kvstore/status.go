package kvstore

import (
	"context"
	"fmt"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Status is the health of the etcd cluster as seen through the client's endpoints.
type Status struct {
	// Healthy is true when a linearizable read succeeded: a quorum of the cluster is reachable and
	// has a leader.
	Healthy bool `json:"healthy"`
	// Error says why the cluster is not healthy.
	Error string `json:"error,omitempty"`
	// ClusterID of the cluster (hex), from the first endpoint that answered.
	ClusterID string `json:"clusterID,omitempty"`
	// Members is the number of members of the cluster, 0 when unknown.
	Members   int              `json:"members,omitempty"`
	Endpoints []EndpointStatus `json:"endpoints"`
}

// EndpointStatus is what one endpoint reports about its member.
type EndpointStatus struct {
	Endpoint  string `json:"endpoint"`
	Reachable bool   `json:"reachable"`
	Error     string `json:"error,omitempty"`
	Version   string `json:"version,omitempty"`
	MemberID  string `json:"memberID,omitempty"` // hex
	Leader    string `json:"leader,omitempty"`   // member ID (hex) of the leader it follows; empty: none
	IsLeader  bool   `json:"isLeader"`
	DBSize    int64  `json:"dbSizeBytes,omitempty"`
	RaftTerm  uint64 `json:"raftTerm,omitempty"`
	RaftIndex uint64 `json:"raftIndex,omitempty"`
	Revision  int64  `json:"revision,omitempty"`
	// Alarms and errors the member reports (e.g. NOSPACE).
	Alarms []string `json:"alarms,omitempty"`
}

// Status asks every endpoint for its member's status and checks that the cluster has quorum. It
// returns within ctx's deadline (or RequestTimeout): an unreachable endpoint is reported, not
// waited for. The error is non-nil only when the client is closed.
func (c *Client) Status(ctx context.Context) (st Status, err error) {
	start := time.Now()
	defer func() { c.metrics.observe(opStatus, start, err) }()
	ctx, cancel, err := c.opContext(ctx)
	if err != nil {
		return Status{}, fmt.Errorf("kvstore status: %w", err)
	}
	defer cancel()

	st.Endpoints = make([]EndpointStatus, len(c.cfg.Endpoints))
	var wg sync.WaitGroup
	for i, ep := range c.cfg.Endpoints {
		// An endpoint that does not answer within the dial timeout is reported unreachable rather
		// than holding the whole status up to the request deadline.
		wg.Go(func() {
			ectx, cancel := context.WithTimeout(ctx, c.cfg.DialTimeout)
			defer cancel()
			st.Endpoints[i] = c.endpointStatus(ectx, ep)
		})
	}
	var quorumErr error
	wg.Go(func() {
		// A linearizable read goes through raft: it succeeds only with a leader and a quorum.
		_, quorumErr = c.cli.Get(ctx, c.cfg.Prefix+"health", clientv3.WithCountOnly())
	})
	var members int
	var clusterID uint64
	wg.Go(func() {
		if resp, err := c.cli.MemberList(ctx); err == nil {
			members = len(resp.Members)
			clusterID = resp.Header.ClusterId
		}
	})
	wg.Wait()

	st.Members = members
	if clusterID != 0 {
		st.ClusterID = fmt.Sprintf("%x", clusterID)
	}
	st.Healthy = quorumErr == nil
	if quorumErr != nil {
		st.Error = fmt.Sprintf("no quorum through %v: %v", c.cfg.Endpoints, quorumErr)
	}
	return st, nil
}

func (c *Client) endpointStatus(ctx context.Context, ep string) EndpointStatus {
	es := EndpointStatus{Endpoint: ep}
	resp, err := c.cli.Status(ctx, ep)
	if err != nil {
		es.Error = err.Error()
		return es
	}
	es.Reachable = true
	es.Version = resp.Version
	es.DBSize = resp.DbSize
	es.RaftTerm = resp.RaftTerm
	es.RaftIndex = resp.RaftIndex
	es.Alarms = resp.Errors
	if resp.Header != nil {
		es.MemberID = fmt.Sprintf("%x", resp.Header.MemberId)
		es.Revision = resp.Header.Revision
		es.IsLeader = resp.Leader != 0 && resp.Leader == resp.Header.MemberId
	}
	if resp.Leader != 0 {
		es.Leader = fmt.Sprintf("%x", resp.Leader)
	}
	return es
}
