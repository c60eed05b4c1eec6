package main

import (
	"fmt"
	"io"
)

// runSidecar is the PHI ext_proc extension; it arrives with its own issue.
// Until then it refuses to run rather than pretend to tag PHI.
func runSidecar(_ []string, _, stderr io.Writer) int {
	fmt.Fprintln(stderr, "medmesh sidecar: not implemented in this version (the PHI ext_proc extension is planned)")
	return 2
}
