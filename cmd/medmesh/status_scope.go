package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"text/tabwriter"

	"medmesh/api/admin"
)

// printScope prints `medmesh status --scope SERVICE`: what the service's
// proxies are sent, and why every service of the mesh is in or out.
func (s statusCall) printScope(stdout, stderr io.Writer, service string) int {
	resp, err := s.c.Get(s.url + "/debug/scope?service=" + url.QueryEscape(service))
	if err != nil {
		fmt.Fprintf(stderr, "medmesh status: cannot reach the control plane at %s: %v\n", s.addr, err)
		return 1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "medmesh status: %s: %s\n", resp.Status, body)
		return 1
	}
	if s.json {
		stdout.Write(body)
		return 0
	}
	var sr admin.ScopeResponse
	if err := json.Unmarshal(body, &sr); err != nil {
		fmt.Fprintf(stderr, "medmesh status: bad response: %v\n", err)
		return 1
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
