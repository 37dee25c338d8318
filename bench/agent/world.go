package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/palisade-mesh/palisade/identity"
)

// The world of figure 3, the shape of issue 4's policy benchmark (docs/benchmarks.md, policy):
//   - apps app-0.. in namespaces ns-(app%50), each with worldVersions identities (version v0..v9),
//     tier t(app%5): 10,000 identities for 1,000 apps;
//   - one CiliumNetworkPolicy per app (1,000 rules): ingress from another app of another
//     namespace on 8080 and from its namespace's tier on 9090, egress to a third app on 5432 and,
//     for one app in ten, to a /24 outside the topology's addresses; the first 100 also admit, on
//     7000, peers labelled hot=h<i> or hot=all in any namespace (100 set-based selectors).
//
// Figure 1's member i carries the labels of app i (without a version), so the world's rules
// select the members too and their computed policy grows like a real node's would.
const (
	worldVersions   = 10
	worldNamespaces = 50
	worldHotRules   = 100
	// importBatch is how many policies one `policy import` carries: the CLI writes a file's
	// policies in one etcd transaction, and etcd refuses transactions of more than 128 operations
	// by default.
	importBatch = 100
)

func worldApp(app int) string       { return fmt.Sprintf("app-%d", app) }
func worldNamespace(app int) string { return fmt.Sprintf("ns-%d", app%worldNamespaces) }
func worldTier(app int) string      { return fmt.Sprintf("t%d", app%5) }

// worldIdentities returns the label sets of the world's identities, as an agent of another node
// would allocate them for its pods.
func worldIdentities(n int) ([]identity.Labels, error) {
	out := make([]identity.Labels, 0, n)
	for app := range n / worldVersions {
		for v := range worldVersions {
			lbls, err := identity.EndpointLabels(map[string]string{
				"app": worldApp(app), "version": fmt.Sprintf("v%d", v), "tier": worldTier(app),
			}, worldNamespace(app), nil, clusterName)
			if err != nil {
				return nil, err
			}
			out = append(out, lbls)
		}
	}
	return out, nil
}

// worldRule is the CiliumNetworkPolicy of one app; apps is the number of apps in the world.
func worldRule(app, apps int) string {
	peer, dest := (app+7)%apps, (app+13)%apps
	var b strings.Builder
	fmt.Fprintf(&b, `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: %s, namespace: %s}
spec:
  endpointSelector: {matchLabels: {app: %s}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: %s, k8s:io.kubernetes.pod.namespace: %s}}]
    toPorts: [{ports: [{port: "8080", protocol: TCP}]}]
  - fromEndpoints: [{matchLabels: {tier: %s}}]
    toPorts: [{ports: [{port: "9090", protocol: TCP}]}]
`, worldApp(app), worldNamespace(app), worldApp(app), worldApp(peer), worldNamespace(peer), worldTier(app))
	if app < worldHotRules {
		fmt.Fprintf(&b, `  - fromEndpoints: [{matchExpressions: [{key: hot, operator: In, values: [h%d, all]}, {key: io.kubernetes.pod.namespace, operator: Exists}]}]
    toPorts: [{ports: [{port: "7000", protocol: TCP}]}]
`, app)
	}
	fmt.Fprintf(&b, `  egress:
  - toEndpoints: [{matchLabels: {app: %s, k8s:io.kubernetes.pod.namespace: %s}}]
    toPorts: [{ports: [{port: "5432", protocol: TCP}]}]
`, worldApp(dest), worldNamespace(dest))
	if app%10 == 0 {
		// 192.168.0.0/16 is used by nothing of the topology (10.99/16, 10.100/16).
		fmt.Fprintf(&b, "  - toCIDR: [192.168.%d.0/24]\n", (app/10)%256)
	}
	return b.String()
}

// writeWorldRules writes the rules into files of importBatch policies and returns their paths.
func writeWorldRules(dir string, rules, apps int) ([]string, error) {
	var files []string
	for first := 0; first < rules; first += importBatch {
		var docs []string
		for app := first; app < min(first+importBatch, rules); app++ {
			docs = append(docs, worldRule(app, apps))
		}
		path := filepath.Join(dir, fmt.Sprintf("world-%04d.yaml", first))
		if err := os.WriteFile(path, []byte(strings.Join(docs, "---\n")), 0o644); err != nil {
			return nil, fmt.Errorf("write world rules: %w", err)
		}
		files = append(files, path)
	}
	return files, nil
}
