package harness

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os/exec"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/palisade-mesh/palisade/test/topology"
)

// Endpoint is what `palisade endpoint create -o json` reports.
type Endpoint struct {
	ID       uint32 `json:"id"`
	IPv4     string `json:"ipv4"`
	Identity uint32 `json:"identity"`
	State    string `json:"state"`
}

// CreateEndpoint registers ns as an endpoint of the agent's node with the given labels
// ("k=v,k=v") and any further `endpoint create` flags, and returns it once its policy is in the
// kernel.
func (a *Agent) CreateEndpoint(t testing.TB, ns *topology.Namespace, labels string, flags ...string) Endpoint {
	t.Helper()
	args := append([]string{"endpoint", "create", "--netns", ns.Path, "--labels", labels, "-o", "json"}, flags...)
	out, err := a.CLI(args...)
	if err != nil {
		t.Fatal(err)
	}
	var eps []Endpoint
	if err := json.Unmarshal([]byte(out), &eps); err != nil || len(eps) != 1 {
		t.Fatalf("endpoint create output %q: %v", out, err)
	}
	return eps[0]
}

// ImportPolicy runs `palisade policy import` against a cluster's etcd.
func ImportPolicy(t testing.TB, kvEndpoint, path string) {
	t.Helper()
	out, err := exec.Command(Binary(t), "policy", "import", "-f", path, "--kvstore-endpoints", kvEndpoint).CombinedOutput()
	if err != nil {
		t.Fatalf("policy import: %v\n%s", err, out)
	}
}

// WaitFor polls cond every 100 ms and fails the test when it does not hold within timeout.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Land sends the tiefighter's landing request to the deathstar at ip and returns the body.
func Land(c *http.Client, ip string) (string, error) {
	return Request(c, http.MethodPost, "http://"+ip+"/v1/request-landing")
}

// Request sends one request and returns the body, or an error naming the status when it is not
// 200 (the body of a 403 is in the error).
func Request(c *http.Client, method, url string) (string, error) {
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		return string(body), &StatusError{Code: resp.StatusCode, Body: string(body)}
	}
	return string(body), err
}

// StatusError is a response other than 200.
type StatusError struct {
	Code int
	Body string
}

func (e *StatusError) Error() string { return http.StatusText(e.Code) + ": " + e.Body }

// LandingStream lands a tiefighter every 50 ms until stopped, counting successes and failures.
type LandingStream struct {
	ok, failed atomic.Int64
	errMu      sync.Mutex
	err        error
	cancel     context.CancelFunc
	done       chan struct{}
}

// StartLandingStream starts landing through c on the deathstar at ip.
func StartLandingStream(c *http.Client, ip string) *LandingStream {
	ctx, cancel := context.WithCancel(context.Background())
	s := &LandingStream{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for ctx.Err() == nil {
			if body, err := Land(c, ip); err != nil || body != "Ship landed\n" {
				s.failed.Add(1)
				s.errMu.Lock()
				if s.err == nil {
					s.err = err
				}
				s.errMu.Unlock()
			} else {
				s.ok.Add(1)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	return s
}

// Stop ends the stream and returns the counts.
func (s *LandingStream) Stop() (ok, failed int64) {
	s.cancel()
	<-s.done
	return s.ok.Load(), s.failed.Load()
}

// FirstErr is the first failure, if any.
func (s *LandingStream) FirstErr() error {
	s.errMu.Lock()
	defer s.errMu.Unlock()
	return s.err
}
