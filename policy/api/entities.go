package api

import "strings"

// Entities a rule may name in fromEntities/toEntities.
const (
	EntityAll           = "all"
	EntityWorld         = "world"
	EntityWorldIPv4     = "world-ipv4"
	EntityWorldIPv6     = "world-ipv6"
	EntityCluster       = "cluster"
	EntityHost          = "host"
	EntityRemoteNode    = "remote-node"
	EntityKubeAPIServer = "kube-apiserver"
	EntityHealth        = "health"
	EntityInit          = "init"
	EntityUnmanaged     = "unmanaged"
	EntityIngress       = "ingress"
)

// Entities lists the valid entities in the order messages show them.
var Entities = []string{
	EntityAll, EntityWorld, EntityCluster, EntityHost, EntityRemoteNode, EntityKubeAPIServer,
	EntityHealth, EntityInit, EntityUnmanaged, EntityIngress, EntityWorldIPv4, EntityWorldIPv6,
}

// entityHints explain what users who write a pod name as an entity meant.
var entityHints = map[string]string{
	"kube-dns": "to select kube-dns use toEndpoints with matchLabels {k8s:io.kubernetes.pod.namespace: kube-system, k8s-app: kube-dns}",
	"coredns":  "to select CoreDNS use toEndpoints with matchLabels {k8s:io.kubernetes.pod.namespace: kube-system, k8s-app: kube-dns}",
}

func validateEntity(r *report, path, e, dir string) {
	for _, v := range Entities {
		if e == v {
			return
		}
	}
	msg := "unknown entity %q (valid: %s)"
	if hint, ok := entityHints[strings.ToLower(e)]; ok {
		if dir == "from" {
			hint = strings.ReplaceAll(hint, "toEndpoints", "fromEndpoints")
		}
		r.errorf(path, msg+"; %s", e, strings.Join(Entities, ", "), hint)
		return
	}
	r.errorf(path, msg+"; to select pods by label use %sEndpoints", e, strings.Join(Entities, ", "), dir)
}
