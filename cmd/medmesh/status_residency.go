package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

	"medmesh/api/admin"
)

func fetchResidency(c *http.Client, base string) (*admin.ResidencyResponse, error) {
	resp, err := c.Get(base + "/debug/residency")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s", resp.Status)
	}
	var rr admin.ResidencyResponse
	if err := json.NewDecoder(resp.Body).Decode(&rr); err != nil {
		return nil, fmt.Errorf("bad response: %w", err)
	}
	return &rr, nil
}

// PrintResidency says, at an edge site, which policy decides what crosses
// sites, which other sites' services this site's proxies are sent, which
// are held back and for whom, and which services cannot be served here.
func PrintResidency(w io.Writer, rr *admin.ResidencyResponse) {
	if rr.Site == "" {
		return
	}
	fmt.Fprintf(w, "site %s: residency policy %s (%s)\n", rr.Site, orDash(rr.Policy.Name), orDash(rr.Policy.Digest))
	if rr.Policy.LastError != "" {
		fmt.Fprintf(w, "residency policy error (the policy above stays in force): %s\n", oneLine(rr.Policy.LastError, 300))
	}
	for _, d := range rr.Decisions {
		if d.Routed {
			fmt.Fprintf(w, "residency: %s at %s: routed here (%d instances)\n", d.Service, d.Site, d.Instances)
			continue
		}
		callers := make([]string, 0, len(d.Denied))
		for _, c := range d.Denied {
			callers = append(callers, c.Source)
		}
		reason := ""
		if len(d.Denied) > 0 && len(d.Denied[0].Reasons) > 0 {
			reason = ": " + oneLine(d.Denied[0].Reasons[0], 200)
		}
		fmt.Fprintf(w, "residency: %s at %s: held back (refused for %s)%s\n", d.Service, d.Site, strings.Join(callers, ", "), reason)
	}
	for _, c := range rr.Conditions {
		fmt.Fprintf(w, "residency condition: %s\n", c.Message)
	}
}
