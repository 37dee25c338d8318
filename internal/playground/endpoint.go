package playground

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	apiv1 "github.com/palisade-mesh/palisade/api/v1"
	"github.com/palisade-mesh/palisade/test/topology"
)

var validEndpointName = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,31}$`)

// Workloads an endpoint can run.
const (
	WorkloadNone      = ""
	WorkloadDeathstar = "deathstar" // the Star Wars scenario's HTTP API on port 80
)

// AddEndpoint creates a namespace, makes it an endpoint of node through that node's agent and
// starts the workload in it. Endpoint names are unique within a cluster; in a mesh, other
// clusters may use the same name (address them as cluster/name).
func (s *State) AddEndpoint(ctx context.Context, name, node string, labels []string, workload, binary string) (EndpointState, error) {
	if !validEndpointName.MatchString(name) {
		return EndpointState{}, fmt.Errorf("endpoint name %q: 1 to 32 lower-case letters, digits and '-', starting with a letter or digit", name)
	}
	if workload != WorkloadNone && workload != WorkloadDeathstar {
		return EndpointState{}, fmt.Errorf("unknown workload %q (valid: %s)", workload, WorkloadDeathstar)
	}
	unlock, err := lock(s.Dir)
	if err != nil {
		return EndpointState{}, err
	}
	defer unlock()
	if err := s.reload(); err != nil {
		return EndpointState{}, err
	}
	n, err := s.Node(node)
	if err != nil {
		return EndpointState{}, err
	}
	if _, err := s.Endpoint(n.Cluster + "/" + name); err == nil {
		return EndpointState{}, fmt.Errorf("cluster %s has an endpoint %q already", n.Cluster, name)
	}
	file := "ep-" + name
	if s.Mesh() {
		file = "ep-" + n.Cluster + "-" + name
	}
	ns, err := topology.CreateNamespace(s.NSPrefix + file)
	if err != nil {
		return EndpointState{}, err
	}
	client, closeFn, err := agentClient(n)
	if err != nil {
		_ = topology.DeleteNamespace(ns.Name)
		return EndpointState{}, err
	}
	defer closeFn()
	ep, err := client.CreateEndpoint(ctx, &apiv1.CreateEndpointRequest{NetnsPath: ns.Path, Labels: labels, Name: name})
	if err != nil {
		_ = topology.DeleteNamespace(ns.Name)
		return EndpointState{}, fmt.Errorf("create endpoint %s on %s: %w", name, n.Name, err)
	}
	es := EndpointState{Name: name, Cluster: n.Cluster, Node: n.Name, Namespace: ns.Name, ID: ep.GetId(), IPv4: ep.GetIpv4(), Identity: ep.GetIdentity(), Labels: labels}
	if workload == WorkloadDeathstar {
		p, err := startDaemon(ns, binary, filepath.Join(s.Dir, file+".log"), "dev", "serve-deathstar", "--name", name, "--listen", ":80")
		if err != nil {
			return EndpointState{}, err
		}
		es.Server = &p
	}
	s.Endpoints = append(s.Endpoints, es)
	return es, s.save()
}

// Response is the outcome of one request from an endpoint.
type Response struct {
	Status  int    `json:"status,omitempty"`
	Body    string `json:"body,omitempty"`
	Dropped bool   `json:"dropped,omitempty"` // no connection within the timeout
	Error   string `json:"error,omitempty"`
}

// Verdict is the short form for tables.
func (r Response) Verdict() string {
	switch {
	case r.Dropped:
		return "dropped (connection timed out)"
	case r.Error != "":
		return "error: " + r.Error
	}
	return fmt.Sprintf("%d %s", r.Status, strings.TrimSpace(r.Body))
}

// Request sends one HTTP request from endpoint from to endpoint to, from inside from's namespace.
func (s *State) Request(ctx context.Context, from, to, method, path string, timeout time.Duration) (Response, error) {
	src, err := s.Endpoint(from)
	if err != nil {
		return Response{}, err
	}
	dst, err := s.Endpoint(to)
	if err != nil {
		return Response{}, err
	}
	ns, err := topology.OpenNamespace(src.Namespace)
	if err != nil {
		return Response{}, err
	}
	client := &http.Client{Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return ns.DialContext(ctx, &net.Dialer{Timeout: timeout}, network, addr)
		},
	}, Timeout: timeout}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+dst.IPv4+path, nil)
	if err != nil {
		return Response{}, err
	}
	resp, err := client.Do(req)
	if err != nil {
		var nerr net.Error
		if errors.As(err, &nerr) && nerr.Timeout() {
			return Response{Dropped: true}, nil
		}
		return Response{Error: err.Error()}, nil
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return Response{Status: resp.StatusCode, Body: string(body)}, nil
}

// RequestUntil repeats Request, each attempt with timeout, until the answer has status want or
// within has passed. It returns the last answer, how many requests it sent and how long it took
// to get the wanted answer; an error if it did not get it.
func (s *State) RequestUntil(ctx context.Context, from, to, method, path string, timeout time.Duration, want int, within time.Duration) (Response, int, time.Duration, error) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	for attempts := 1; ; attempts++ {
		r, err := s.Request(ctx, from, to, method, path, timeout)
		if err != nil {
			return r, attempts, time.Since(start), err
		}
		if r.Status == want {
			return r, attempts, time.Since(start), nil
		}
		if !r.Dropped {
			// An answer or a refusal comes back at once: do not spin.
			select {
			case <-time.After(20 * time.Millisecond):
			case <-ctx.Done():
			}
		}
		if ctx.Err() != nil {
			return r, attempts, time.Since(start), fmt.Errorf("%s %s %s -> %s: no %d within %s (%d requests, last: %s)", from, method, path, to, want, within, attempts, r.Verdict())
		}
	}
}
