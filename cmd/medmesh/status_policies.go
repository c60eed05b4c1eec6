package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	"medmesh/api/admin"
)

func fetchPolicies(c *http.Client, base string) (*admin.PoliciesResponse, error) {
	resp, err := c.Get(base + "/debug/policies")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return &admin.PoliciesResponse{}, nil // an older control plane
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s", resp.Status)
	}
	var pr admin.PoliciesResponse
	if err := json.NewDecoder(resp.Body).Decode(&pr); err != nil {
		return nil, fmt.Errorf("bad response: %w", err)
	}
	return &pr, nil
}

// PrintPolicies summarises policies and lists every object that is not in
// force, with the reason naming its field, and the source's errors. Quiet
// when the control plane has no policy source.
func PrintPolicies(w io.Writer, pr *admin.PoliciesResponse) {
	if pr.Source == "" {
		return
	}
	bad := pr.NotAccepted()
	fmt.Fprintf(w, "policies (%s): %d in force, %d not accepted\n", pr.Source, len(pr.Objects)-len(bad), len(bad))
	for _, e := range pr.Errors {
		fmt.Fprintf(w, "policy error: %s\n", oneLine(e, 300))
	}
	for _, o := range bad {
		fmt.Fprintf(w, "policy not accepted: %s: %s\n", o.Key, oneLine(o.Message(), 300))
	}
}
