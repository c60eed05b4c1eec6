package main

import (
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// Why a second floor. The same do-nothing ext_proc server, built into a
// binary that links what medmesh links, answered one request at a time
// about 20 us slower at p50 (+15%) and 40 us at p99 on a 2-vCPU VM than
// built into this small bench binary; the extension's own code, built
// into the small binary, was as fast as the do-nothing server sending
// the same answer. CPU profiles of the two show the same functions in
// the same shares, each slower, in user and kernel time alike: the hot
// gRPC, protobuf and runtime code spread over a larger binary, not work
// the extension does. So beside the floor in this binary (the figure
// the targets were set against) the bench measures the do-nothing server
// built into a binary linked like medmesh (tag medmeshweight, weight.go),
// which separates the extension's cost from the binary's.

// buildWeightedFloor builds this program with the medmeshweight tag into
// dir. It must run from the repository root, as `make bench` does.
func buildWeightedFloor(dir string) (string, error) {
	out := filepath.Join(dir, "floor-weighted")
	cmd := exec.Command("go", "build", "-tags", "medmeshweight", "-o", out, "./bench/extproc")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("building the do-nothing server linked like medmesh (run from the repository root, or -weighted-floor=false): %w", err)
	}
	return out, nil
}

// textMiB is the size of a binary's machine code (0 if unreadable).
func textMiB(path string) float64 {
	f, err := elf.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	if s := f.Section(".text"); s != nil {
		return float64(s.Size) / (1 << 20)
	}
	return 0
}
