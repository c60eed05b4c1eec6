package main

import (
	"fmt"
	"io"
	"net/url"
	"text/tabwriter"

	"medmesh/api/admin"
)

// printScope prints `medmesh status --scope SERVICE`: what the service's
// proxies are sent, and why every service of the mesh is in or out.
func (s statusCall) printScope(stdout, stderr io.Writer, service string) int {
	var sr admin.ScopeResponse
	if done, code := s.get(stdout, stderr, "/debug/scope?service="+url.QueryEscape(service), &sr); done {
		return code
	}
	PrintScope(stdout, &sr)
	return 0
}

// PrintScope renders a service's scope.
func PrintScope(w io.Writer, sr *admin.ScopeResponse) {
	narrowed := ""
	if sr.Explicit {
		narrowed = " (narrowed: medmesh-scope=explicit)"
	}
	fmt.Fprintf(w, "scope of %s: %d of %d services%s\n", sr.Service, len(sr.Included), sr.Services, narrowed)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVICE\tSENT\tWHY")
	for _, e := range sr.Included {
		fmt.Fprintf(tw, "%s\tyes\t%s\n", e.Service, e.Reason)
	}
	for _, e := range sr.Excluded {
		fmt.Fprintf(tw, "%s\tno\t%s\n", e.Service, e.Reason)
	}
	tw.Flush()
}
