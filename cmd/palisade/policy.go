package main

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/spf13/cobra"

	"github.com/palisade-mesh/palisade/identity"
	"github.com/palisade-mesh/palisade/policy"
	"github.com/palisade-mesh/palisade/policy/api"
)

// policySubcommands build the `palisade policy` subcommands. Commands that talk to an agent add
// theirs from their own file:
//
//	func init() { policySubcommands = append(policySubcommands, newPolicyImportCommand) }
var policySubcommands = []func() *cobra.Command{newPolicyValidateCommand, newPolicyTraceCommand}

func newPolicyCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Validate, trace and manage network policies",
		Long: `Policies are written as for Cilium: cilium.io/v2 CiliumNetworkPolicy and
CiliumClusterwideNetworkPolicy, and networking.k8s.io/v1 NetworkPolicy, in YAML (several documents)
or JSON (an object, a list, or a bare array of rules).`,
	}
	for _, sub := range policySubcommands {
		cmd.AddCommand(sub())
	}
	return cmd
}

// policyFileFlags are how commands read policy files.
type policyFileFlags struct {
	files     []string
	name      string
	namespace string
}

func (f *policyFileFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringArrayVarP(&f.files, "file", "f", nil, "policy file (YAML or JSON; - for standard input); repeatable")
	cmd.Flags().StringVar(&f.name, "name", "", "name of a bare list of rules (default: the file name)")
	cmd.Flags().StringVarP(&f.namespace, "namespace", "n", "default", "namespace of namespaced policies that name none")
	_ = cmd.MarkFlagRequired("file")
}

// loadedFile is one decoded policy file.
type loadedFile struct {
	path     string
	policies []*api.Policy
	warnings []api.Warning
}

// load reads and decodes every file. Any error in any file fails the whole load (importing a set
// of files is all or nothing); the files are returned anyway for their warnings.
func (f *policyFileFlags) load(stdin io.Reader) ([]loadedFile, error) {
	var (
		out  []loadedFile
		errs []string
	)
	for _, path := range f.files {
		data, err := readPolicyFile(path, stdin)
		if err != nil {
			return out, err
		}
		ps, warnings, err := api.Decode(data, api.DecodeOptions{Name: f.bareRulesName(path), DefaultNamespace: f.namespace})
		if err != nil {
			errs = append(errs, prefixLines(path+": ", err.Error()))
		}
		out = append(out, loadedFile{path: path, policies: ps, warnings: warnings})
	}
	if len(errs) > 0 {
		return out, errors.New(strings.Join(errs, "\n"))
	}
	return out, nil
}

// printWarnings writes the warnings of the files, each naming its file.
func printWarnings(w io.Writer, files []loadedFile) {
	for _, lf := range files {
		for _, warn := range lf.warnings {
			fmt.Fprintf(w, "%s: warning: %s\n", lf.path, warn)
		}
	}
}

func readPolicyFile(path string, stdin io.Reader) ([]byte, error) {
	if path == "-" {
		data, err := io.ReadAll(stdin)
		if err != nil {
			return nil, fmt.Errorf("read policy from standard input: %w", err)
		}
		return data, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read policy file: %w", err)
	}
	return data, nil
}

var notNameChars = regexp.MustCompile(`[^a-z0-9.-]+`)

// bareRulesName names a bare list of rules after its file ("read-only.json" -> "read-only").
func (f *policyFileFlags) bareRulesName(path string) string {
	if f.name != "" {
		return f.name
	}
	if path == "-" {
		return ""
	}
	base := strings.ToLower(strings.TrimSuffix(filepath.Base(path), filepath.Ext(path)))
	return strings.Trim(notNameChars.ReplaceAllString(base, "-"), "-.")
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

func prefixLines(prefix, s string) string {
	lines := strings.Split(s, "\n")
	for i := range lines {
		lines[i] = prefix + lines[i]
	}
	return strings.Join(lines, "\n")
}

func newPolicyValidateCommand() *cobra.Command {
	files := &policyFileFlags{}
	cmd := &cobra.Command{
		Use:   "validate -f FILE",
		Short: "Check policy files offline: errors name the document, field and reason",
		Example: `  palisade policy validate -f examples/starwars/l7.yaml
  palisade policy validate -f examples/r2d2/read-only.json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			loaded, err := files.load(cmd.InOrStdin())
			w := cmd.OutOrStdout()
			printWarnings(w, loaded)
			if err != nil {
				return err
			}
			for _, lf := range loaded {
				for _, p := range lf.policies {
					n := len(p.Rules())
					fmt.Fprintf(w, "%s: %s %s: valid (%d %s)\n", lf.path, p.Kind, p.Key().DocName(), n, plural(n, "rule", "rules"))
				}
			}
			return nil
		},
	}
	files.register(cmd)
	return cmd
}

// traceEndpointFlags describe one side of a traced flow.
type traceEndpointFlags struct {
	labels    []string
	namespace string
	cluster   string
	entity    string
	ip        string
}

func (f *traceEndpointFlags) register(cmd *cobra.Command, side string) {
	fs := cmd.Flags()
	fs.StringSliceVar(&f.labels, side+"-labels", nil, "labels of the "+side+" endpoint (key=value or source:key=value; bare keys are k8s labels)")
	fs.StringVar(&f.namespace, side+"-namespace", "default", "namespace of the "+side+" endpoint")
	fs.StringVar(&f.cluster, side+"-cluster", "", "cluster of the "+side+" endpoint (default: --cluster)")
	fs.StringVar(&f.entity, side+"-entity", "", "the "+side+" is a reserved identity instead (world, host, remote-node, ...)")
	fs.StringVar(&f.ip, side+"-ip", "", "the "+side+" is an address outside the cluster (resolved to its CIDR identity, or world)")
}

func (f *traceEndpointFlags) validate(side string) error {
	set := 0
	for _, on := range []bool{len(f.labels) > 0, f.entity != "", f.ip != ""} {
		if on {
			set++
		}
	}
	if set != 1 {
		return fmt.Errorf("give exactly one of --%[1]s-labels, --%[1]s-entity, --%[1]s-ip", side)
	}
	return nil
}

// labels builds the identity labels of a workload, as the agent would.
func (f *traceEndpointFlags) identityLabels(defaultCluster string) (identity.Labels, error) {
	ls := make([]identity.Label, 0, len(f.labels)+2)
	for _, s := range f.labels {
		l, err := identity.ParseLabel(s)
		if err != nil {
			return nil, err
		}
		if l.Source == identity.SourceUnspec && !strings.HasPrefix(s, identity.SourceUnspec+":") {
			l.Source = identity.SourceK8s
		}
		ls = append(ls, l)
	}
	lbls := identity.NewLabels(ls...)
	cluster := f.cluster
	if cluster == "" {
		cluster = defaultCluster
	}
	if _, ok := lbls.Lookup(identity.SourceAny, identity.LabelNamespace); !ok {
		lbls = lbls.Merge(identity.Labels{{Source: identity.SourceK8s, Key: identity.LabelNamespace, Value: f.namespace}})
	}
	if _, ok := lbls.Lookup(identity.SourceAny, identity.LabelCluster); !ok {
		lbls = lbls.Merge(identity.Labels{{Source: identity.SourceK8s, Key: identity.LabelCluster, Value: cluster}})
	}
	return lbls, nil
}

type traceFlags struct {
	files       policyFileFlags
	src, dst    traceEndpointFlags
	cluster     string
	allClusters bool
	port        uint16
	protocol    string
	httpMethod  string
	httpPath    string
	httpHost    string
	httpHeaders []string
	l7Proto     string
	l7Fields    []string
}

func newPolicyTraceCommand() *cobra.Command {
	f := &traceFlags{}
	cmd := &cobra.Command{
		Use:   "trace --src-labels ... --dst-labels ... --port N -f FILE",
		Short: "Compute offline whether a flow is allowed, and by which rule",
		Example: `  palisade policy trace -f examples/starwars/l7.yaml --src-labels org=empire,class=tiefighter \
    --dst-labels org=empire,class=deathstar --port 80 --http-method POST --http-path /v1/request-landing
  palisade policy trace -f examples/test-app/egress-external.yaml --src-namespace test-app \
    --src-labels app=app --dst-ip 203.0.113.7 --port 8080`,
		Args: cobra.NoArgs,
	}
	f.files.register(cmd)
	f.src.register(cmd, "src")
	f.dst.register(cmd, "dst")
	fs := cmd.Flags()
	fs.StringVar(&f.cluster, "cluster", "default", "name of the local cluster, whose policies these are")
	fs.BoolVar(&f.allClusters, "all-clusters", false, "peer selectors that name no cluster select every cluster")
	fs.Uint16Var(&f.port, "port", 0, "destination port")
	fs.StringVar(&f.protocol, "protocol", "TCP", "TCP, UDP or SCTP")
	fs.StringVar(&f.httpMethod, "http-method", "", "HTTP method of the request, to check L7 rules")
	fs.StringVar(&f.httpPath, "http-path", "", "HTTP path of the request")
	fs.StringVar(&f.httpHost, "http-host", "", "HTTP host of the request")
	fs.StringArrayVar(&f.httpHeaders, "http-header", nil, `HTTP header of the request ("Name: value"); repeatable`)
	fs.StringVar(&f.l7Proto, "l7-proto", "", "generic L7 protocol of the request (e.g. r2d2)")
	fs.StringArrayVar(&f.l7Fields, "l7", nil, "field of the generic L7 request (key=value); repeatable")
	_ = cmd.MarkFlagRequired("port")
	out := addOutputFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		tr, names, err := runTrace(f, cmd.InOrStdin(), cmd.ErrOrStderr())
		if err != nil {
			return err
		}
		return out.render(cmd.OutOrStdout(), tr, func(w io.Writer) {
			fmt.Fprintf(w, "Source:      identity %s %s\n", tr.Flow.Src, names[tr.Flow.Src])
			fmt.Fprintf(w, "Destination: identity %s %s\n\n", tr.Flow.Dst, names[tr.Flow.Dst])
			fmt.Fprint(w, tr.String())
		})
	}
	return cmd
}

// runTrace loads the files into an engine with the two endpoints' identities and decides the flow.
func runTrace(f *traceFlags, stdin io.Reader, warnings io.Writer) (policy.Trace, map[identity.ID]string, error) {
	var tr policy.Trace
	if err := f.src.validate("src"); err != nil {
		return tr, nil, err
	}
	if err := f.dst.validate("dst"); err != nil {
		return tr, nil, err
	}
	proto, err := parseTraceProtocol(f.protocol)
	if err != nil {
		return tr, nil, err
	}
	loaded, err := f.files.load(stdin)
	if err != nil {
		return tr, nil, err
	}
	printWarnings(warnings, loaded)
	alloc := policy.NewLocalCIDRAllocator()
	eng, err := policy.NewEngine(policy.Options{ClusterName: f.cluster, AllClusters: f.allClusters, CIDRAllocator: alloc})
	if err != nil {
		return tr, nil, err
	}
	var all []*api.Policy
	for _, lf := range loaded {
		all = append(all, lf.policies...)
	}
	if _, _, err := eng.ReplacePolicies(all, nil); err != nil {
		return tr, nil, err
	}
	ids := &traceIdentities{local: f.cluster, clusters: map[string]uint32{f.cluster: 1}, names: map[identity.ID]string{}, byLabels: map[string]identity.ID{}}
	src, err := ids.resolve(eng, alloc, &f.src, f.cluster)
	if err != nil {
		return tr, nil, fmt.Errorf("source: %w", err)
	}
	dst, err := ids.resolve(eng, alloc, &f.dst, f.cluster)
	if err != nil {
		return tr, nil, fmt.Errorf("destination: %w", err)
	}
	flow := policy.Flow{Src: src, Dst: dst, Proto: proto, Port: f.port}
	if f.httpMethod != "" || f.httpPath != "" || f.httpHost != "" || len(f.httpHeaders) > 0 {
		req := &policy.HTTPRequest{Method: f.httpMethod, Path: f.httpPath, Host: f.httpHost, Headers: map[string]string{}}
		for _, h := range f.httpHeaders {
			name, value, _, err := api.ParseHeader(h)
			if err != nil {
				return tr, nil, fmt.Errorf("--http-header: %w", err)
			}
			req.Headers[name] = value
		}
		flow.HTTP = req
	}
	if f.l7Proto != "" {
		req := &policy.L7Request{Proto: f.l7Proto, Fields: map[string]string{}}
		for _, kv := range f.l7Fields {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				return tr, nil, fmt.Errorf("--l7 %q: want key=value", kv)
			}
			req.Fields[k] = v
		}
		flow.L7 = req
	} else if len(f.l7Fields) > 0 {
		return tr, nil, errors.New("--l7 needs --l7-proto")
	}
	tr, err = eng.Decide(flow)
	return tr, ids.names, err
}

func parseTraceProtocol(s string) (uint8, error) {
	switch strings.ToUpper(s) {
	case "TCP":
		return policy.ProtoTCP, nil
	case "UDP":
		return policy.ProtoUDP, nil
	case "SCTP":
		return policy.ProtoSCTP, nil
	}
	return 0, fmt.Errorf("--protocol %q: want TCP, UDP or SCTP", s)
}

// traceIdentities numbers the workloads of a trace as an allocator would: cluster-scoped, one
// cluster ID per cluster named.
type traceIdentities struct {
	local    string
	clusters map[string]uint32
	next     uint32
	names    map[identity.ID]string
	byLabels map[string]identity.ID
}

func (t *traceIdentities) resolve(eng *policy.Engine, alloc *policy.LocalCIDRAllocator, f *traceEndpointFlags, defaultCluster string) (identity.ID, error) {
	switch {
	case f.entity != "":
		id, ok := identity.ReservedByName(f.entity)
		if !ok {
			return 0, fmt.Errorf("unknown reserved identity %q", f.entity)
		}
		t.names[id] = "[reserved:" + f.entity + "]"
		return id, nil
	case f.ip != "":
		addr, err := netip.ParseAddr(f.ip)
		if err != nil {
			return 0, fmt.Errorf("--ip %q: %w", f.ip, err)
		}
		id := alloc.Resolve(addr)
		if lbls, ok := eng.SelectorCache().Labels(id); ok {
			t.names[id] = "[" + lbls.String() + "] (" + f.ip + ")"
		}
		return id, nil
	}
	lbls, err := f.identityLabels(defaultCluster)
	if err != nil {
		return 0, err
	}
	if id, ok := t.byLabels[lbls.String()]; ok {
		return id, nil
	}
	cluster, _ := lbls.Lookup(identity.SourceAny, identity.LabelCluster)
	cid, ok := t.clusters[cluster]
	if !ok {
		cid = uint32(len(t.clusters) + 1)
		t.clusters[cluster] = cid
	}
	id, err := identity.DefaultLayout.ClusterScoped(cid, identity.MinLocalID+t.next)
	if err != nil {
		return 0, err
	}
	t.next++
	eng.UpdateIdentities(map[identity.ID]identity.Labels{id: lbls}, nil)
	t.byLabels[lbls.String()] = id
	t.names[id] = "[" + lbls.String() + "]"
	return id, nil
}
