package playground

import (
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"time"

	"github.com/palisade-mesh/palisade/certs"
	"github.com/palisade-mesh/palisade/clustermesh"
	"github.com/palisade-mesh/palisade/test/topology"
)

// Mesh settings of a playground of several clusters.
const (
	// MeshTrustDomain is the SPIFFE trust domain of the playground's mesh CA.
	MeshTrustDomain = "mesh.local"
	// MeshAPIPort is where every cluster's mesh API server listens on its control-plane address.
	MeshAPIPort = 4245
	// meshTokenTTL is how long the access tokens the clusters issue each other stay valid.
	meshTokenTTL = 30 * 24 * time.Hour
)

// setUpMesh does what an operator does before starting a mesh's daemons: one mesh CA
// (palisade certs init), one cluster directory per cluster with its certificates and token
// signing key (palisade clustermesh init), and every pair of clusters connected (palisade
// clustermesh connect), which writes each cluster's remotes/ directory for its agents.
func (s *State) setUpMesh() error {
	s.CADir = filepath.Join(s.Dir, "mesh", "ca")
	ca, err := certs.NewCA(certs.CAOptions{TrustDomain: MeshTrustDomain})
	if err != nil {
		return err
	}
	if err := ca.Write(s.CADir, false); err != nil {
		return err
	}
	dirs := make([]clustermesh.ClusterDir, len(s.Clusters))
	for i := range s.Clusters {
		c := &s.Clusters[i]
		c.MeshAddress = net.JoinHostPort(c.ControlPlaneIP, strconv.Itoa(MeshAPIPort))
		c.MeshDir = filepath.Join(s.Dir, "mesh", c.Name)
		d, err := clustermesh.InitClusterDir(clustermesh.InitOptions{
			Dir: c.MeshDir, CADir: s.CADir, Name: c.Name, ID: c.ID, Address: c.MeshAddress,
		})
		if err != nil {
			return fmt.Errorf("cluster directory of %s: %w", c.Name, err)
		}
		dirs[i] = d
	}
	for i := range dirs {
		for j := i + 1; j < len(dirs); j++ {
			if _, err := clustermesh.Connect(dirs[i], dirs[j], meshTokenTTL); err != nil {
				return fmt.Errorf("connect %s and %s: %w", dirs[i].Info.Name, dirs[j].Info.Name, err)
			}
		}
	}
	return nil
}

// startMeshAPIServer runs `palisade mesh-apiserver` for c in its control-plane namespace, serving
// c's etcd to the other clusters on c's fabric address.
func (s *State) startMeshAPIServer(c ClusterState, binary string) (Process, error) {
	d, err := clustermesh.OpenClusterDir(c.MeshDir)
	if err != nil {
		return Process{}, err
	}
	ns, err := topology.OpenNamespace(c.ControlPlane)
	if err != nil {
		return Process{}, err
	}
	srv := d.ServerCert()
	return startDaemon(ns, binary, s.file(c, "mesh-apiserver.log"), "mesh-apiserver",
		"--cluster-name", c.Name, "--cluster-id", strconv.FormatUint(uint64(c.ID), 10),
		"--kvstore-endpoints", c.KvstoreEndpoint(), "--listen", c.MeshAddress,
		"--ca-file", d.CABundle(), "--cert-file", srv.Cert, "--key-file", srv.Key,
		"--signing-key", d.SigningKey())
}
