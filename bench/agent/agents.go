package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/procfs"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	apiv1 "github.com/palisade-mesh/palisade/api/v1"
	"github.com/palisade-mesh/palisade/test/topology"
)

// metricsPort is where each agent serves its metrics, on the loopback of its node namespace.
const metricsPort = 9962

// agentProc is one `palisade agent` process in a node namespace, with a client of its API.
type agentProc struct {
	node    *topology.Node
	bin     string
	args    []string
	pinDir  string
	logPath string

	conn *grpc.ClientConn
	api  apiv1.AgentClient

	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has been waited for
}

// startAgent starts the agent of node and waits until its API answers.
func startAgent(ctx context.Context, b *bench, node *topology.Node) (*agentProc, error) {
	socket := filepath.Join(b.dir, node.Name+".sock")
	a := &agentProc{
		node:    node,
		bin:     b.bin,
		pinDir:  fmt.Sprintf("/sys/fs/bpf/pal-bench-%d-%s-%s", os.Getpid(), b.topo.Suffix(), node.Name),
		logPath: filepath.Join(b.dir, node.Name+".log"),
	}
	a.args = []string{"agent",
		"--cluster-name", clusterName, "--cluster-id", fmt.Sprint(clusterID),
		"--node-name", node.Name, "--node-ip", node.FabricIP.String(), "--pod-cidr", node.PodCIDR.String(),
		"--kvstore-endpoints", b.kvEndpoint, "--lease-ttl", "15s",
		"--state-dir", filepath.Join(b.dir, node.Name+"-state"), "--socket", socket, "--bpf-pin-dir", a.pinDir,
		"--metrics-addr", fmt.Sprintf("127.0.0.1:%d", metricsPort),
	}
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("agent API client for %s: %w", node.Name, err)
	}
	a.conn, a.api = conn, apiv1.NewAgentClient(conn)
	return a, a.start(ctx)
}

// start runs the agent process and waits until its API answers. The agent gets its own process
// group so that a Ctrl-C in the terminal reaches the harness only, which then stops it in order.
func (a *agentProc) start(ctx context.Context) error {
	logFile, err := os.OpenFile(a.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logFile.Close()
	cmd := a.node.NS.Command(context.Background(), a.bin, a.args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := a.node.NS.Start(cmd); err != nil {
		return fmt.Errorf("start agent on %s: %w", a.node.Name, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	a.cmd, a.done = cmd, done
	return a.waitReady(ctx)
}

func (a *agentProc) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		callCtx, callCancel := context.WithTimeout(ctx, time.Second)
		_, err := a.api.Status(callCtx, &apiv1.StatusRequest{})
		callCancel()
		if err == nil {
			return nil
		}
		select {
		case <-a.done:
			return fmt.Errorf("agent on %s exited:\n%s", a.node.Name, a.logTail())
		case <-ctx.Done():
			return fmt.Errorf("agent on %s not ready: %w (last error: %v)\n%s", a.node.Name, ctx.Err(), err, a.logTail())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// stop sends SIGTERM and waits for the agent to exit, killing it after 15 seconds.
func (a *agentProc) stop() {
	if a.cmd == nil {
		return
	}
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.done:
	case <-time.After(15 * time.Second):
		_ = a.cmd.Process.Kill()
		<-a.done
	}
	a.cmd = nil
}

// remove stops the agent and removes its pinned datapath (which outlives the agent by design).
func (a *agentProc) remove() error {
	a.stop()
	a.conn.Close()
	if err := os.RemoveAll(a.pinDir); err != nil {
		return fmt.Errorf("remove pins of agent %s: %w", a.node.Name, err)
	}
	return nil
}

func (a *agentProc) exited() bool {
	select {
	case <-a.done:
		return true
	default:
		return false
	}
}

// logTail returns the end of the agent's log, for errors.
func (a *agentProc) logTail() string {
	raw, _ := os.ReadFile(a.logPath)
	lines := strings.Split(strings.TrimRight(string(raw), "\n"), "\n")
	if len(lines) > 30 {
		lines = lines[len(lines)-30:]
	}
	return strings.Join(lines, "\n")
}

// memory is the agent's memory at one moment.
type memory struct {
	rss, peakRSS uint64 // VmRSS and VmHWM of /proc/<pid>/status
	// rssFile is the part of rss that maps files: mostly the pages of the binary's code that
	// have run, which every process of the binary shares.
	rssFile   uint64
	heapInuse uint64 // go_memstats_heap_inuse_bytes from the agent's metrics
}

func (a *agentProc) memory(ctx context.Context) (memory, error) {
	if a.cmd == nil || a.exited() {
		return memory{}, fmt.Errorf("agent on %s is not running", a.node.Name)
	}
	proc, err := procfs.NewProc(a.cmd.Process.Pid)
	if err != nil {
		return memory{}, err
	}
	st, err := proc.NewStatus()
	if err != nil {
		return memory{}, fmt.Errorf("read status of agent %s: %w", a.node.Name, err)
	}
	m := memory{rss: st.VmRSS, peakRSS: st.VmHWM, rssFile: st.RssFile}
	families, err := a.metrics(ctx)
	if err != nil {
		return m, err
	}
	heap, err := metricSum(families, "go_memstats_heap_inuse_bytes")
	m.heapInuse = uint64(heap)
	return m, err
}

// cpuSeconds is the CPU time (user and system) the agent process has used.
func (a *agentProc) cpuSeconds() (float64, error) {
	if a.cmd == nil || a.exited() {
		return 0, fmt.Errorf("agent on %s is not running", a.node.Name)
	}
	proc, err := procfs.NewProc(a.cmd.Process.Pid)
	if err != nil {
		return 0, err
	}
	st, err := proc.Stat()
	if err != nil {
		return 0, fmt.Errorf("read stat of agent %s: %w", a.node.Name, err)
	}
	return st.CPUTime(), nil
}

// metrics scrapes the agent's metrics, served inside its node namespace.
func (a *agentProc) metrics(ctx context.Context) (map[string]*dto.MetricFamily, error) {
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return a.node.NS.DialContext(ctx, nil, network, addr)
		},
		DisableKeepAlives: true,
	}}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort), nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape metrics of agent %s: %w", a.node.Name, err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("parse metrics of agent %s: %w", a.node.Name, err)
	}
	return families, nil
}

// metricSum adds up the samples of a gauge or counter family, or the sample sums of a histogram.
func metricSum(families map[string]*dto.MetricFamily, name string) (float64, error) {
	mf, ok := families[name]
	if !ok {
		return 0, fmt.Errorf("no metric %s", name)
	}
	var sum float64
	for _, m := range mf.GetMetric() {
		switch {
		case m.GetGauge() != nil:
			sum += m.GetGauge().GetValue()
		case m.GetCounter() != nil:
			sum += m.GetCounter().GetValue()
		case m.GetHistogram() != nil:
			sum += m.GetHistogram().GetSampleSum()
		default:
			return 0, fmt.Errorf("metric %s is not a gauge, counter or histogram", name)
		}
	}
	return sum, nil
}

// endpoints lists the agent's endpoints through its API.
func (a *agentProc) endpoints(ctx context.Context) ([]*apiv1.Endpoint, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := a.api.ListEndpoints(ctx, &apiv1.ListEndpointsRequest{})
	if err != nil {
		return nil, fmt.Errorf("list endpoints of agent %s: %w", a.node.Name, err)
	}
	return resp.GetEndpoints(), nil
}

func (a *agentProc) status(ctx context.Context) (*apiv1.StatusResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, err := a.api.Status(ctx, &apiv1.StatusRequest{})
	if err != nil {
		return nil, fmt.Errorf("status of agent %s: %w", a.node.Name, err)
	}
	return st, nil
}
