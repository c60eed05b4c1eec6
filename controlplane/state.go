package controlplane

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"medmesh/registry"
)

const stateFile = "catalog.json"

// saveState writes the last good catalog atomically (write, fsync, rename)
// so a crash mid-write never leaves a torn file for the next start.
func (cp *ControlPlane) saveState(cat *registry.Catalog) {
	if cp.opts.StateDir == "" {
		return
	}
	if err := writeFileAtomic(filepath.Join(cp.opts.StateDir, stateFile), cat); err != nil {
		cp.log.Warn("cannot save the last good catalog", "dir", cp.opts.StateDir, "err", err)
	}
}

func writeFileAtomic(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".catalog-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// loadState reads the saved catalog; (nil, nil) when there is none.
func (cp *ControlPlane) loadState() (*registry.Catalog, error) {
	if cp.opts.StateDir == "" {
		return nil, nil
	}
	path := filepath.Join(cp.opts.StateDir, stateFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var cat registry.Catalog
	if err := json.Unmarshal(b, &cat); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &cat, nil
}
