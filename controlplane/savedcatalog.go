package controlplane

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"medmesh/internal/atomicfile"
	"medmesh/registry"
)

const stateFile = "catalog.json"

// The last good catalog is kept on disk (Options.StateDir) so that an
// edge site serves its mesh after a restart without its registry.

// saveCatalog writes the last good catalog atomically (write, fsync, rename)
// so a crash mid-write never leaves a torn file for the next start.
func (cp *ControlPlane) saveCatalog(cat *registry.Catalog) {
	if cp.opts.StateDir == "" {
		return
	}
	b, err := json.Marshal(cat)
	if err == nil {
		err = os.MkdirAll(cp.opts.StateDir, 0o700)
	}
	if err == nil {
		err = atomicfile.Write(filepath.Join(cp.opts.StateDir, stateFile), b, 0o600)
	}
	if err != nil {
		cp.log.Warn("cannot save the last good catalog", "dir", cp.opts.StateDir, "err", err)
	}
}

// loadCatalog reads the saved catalog; (nil, nil) when there is none.
func (cp *ControlPlane) loadCatalog() (*registry.Catalog, error) {
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
