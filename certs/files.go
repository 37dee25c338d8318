package certs

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// File is one file to write: certificates are 0644, keys 0600.
type File struct {
	Path string
	Data []byte
	Mode fs.FileMode
}

// ErrExists is returned by WriteFiles when a file exists and the caller did not force.
var ErrExists = errors.New("file exists (use --force to replace it)")

// WriteFiles writes all files or, when one is in the way, none. A file that already holds exactly
// the bytes to write is not in the way (re-issuing with the same trust bundle is harmless). Each
// file is written to a temporary name in the same directory, synced and renamed over the target,
// so readers (and the reloading TLS source) see the old or the new file, never a partial one.
// Missing directories are created 0700.
func WriteFiles(files []File, force bool) error {
	if !force {
		var inTheWay []string
		for _, f := range files {
			old, err := os.ReadFile(f.Path)
			switch {
			case errors.Is(err, fs.ErrNotExist):
			case err != nil:
				return fmt.Errorf("check %s: %w", f.Path, err)
			case !bytes.Equal(old, f.Data):
				inTheWay = append(inTheWay, f.Path)
			}
		}
		if len(inTheWay) > 0 {
			return fmt.Errorf("%w: %s", ErrExists, strings.Join(inTheWay, ", "))
		}
	}
	for _, f := range files {
		if err := writeAtomic(f); err != nil {
			return err
		}
	}
	return nil
}

func writeAtomic(f File) error {
	dir := filepath.Dir(f.Path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create directory %s: %w", dir, err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(f.Path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", f.Path, err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if err := tmp.Chmod(f.Mode); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", f.Path, err)
	}
	if _, err := tmp.Write(f.Data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", f.Path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", f.Path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", f.Path, err)
	}
	if err := os.Rename(tmp.Name(), f.Path); err != nil {
		return fmt.Errorf("write %s: %w", f.Path, err)
	}
	return nil
}
