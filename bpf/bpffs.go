package bpf

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

const bpffsRoot = "/sys/fs/bpf"

// ensureBPFFS makes sure dir lies on a bpffs, mounting one at /sys/fs/bpf when dir is below it and
// nothing is mounted there yet (minimal systems and containers often lack the mount).
func ensureBPFFS(dir string) error {
	clean := filepath.Clean(dir)
	if clean == bpffsRoot || strings.HasPrefix(clean, bpffsRoot+"/") {
		ok, err := isBPFFS(bpffsRoot)
		if err != nil {
			return err
		}
		if !ok {
			if err := unix.Mount("bpffs", bpffsRoot, "bpf", 0, "mode=0700"); err != nil {
				return fmt.Errorf("mount bpffs at %s: %w", bpffsRoot, err)
			}
		}
	}
	if err := os.MkdirAll(clean, 0o700); err != nil {
		return fmt.Errorf("create pin directory %s: %w", clean, err)
	}
	ok, err := isBPFFS(clean)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("pin directory %s is not on a bpf filesystem (mount -t bpf bpffs <dir>)", clean)
	}
	return nil
}

func isBPFFS(path string) (bool, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return false, fmt.Errorf("statfs %s: %w", path, err)
	}
	return st.Type == unix.BPF_FS_MAGIC, nil
}
