package main

import (
	"context"

	"medmesh/internal/consulagent"
)

// startConsul starts a Consul dev agent. consulagent runs it in a process
// group of its own with a parent-death signal, so a terminal's Ctrl-C
// reaches the demo first (services deregister before Consul stops) and a
// killed demo never leaves Consul running. It returns the agent and the
// Consul binary used.
func startConsul(ctx context.Context, runDir string) (*consulagent.Agent, string, error) {
	a, err := consulagent.New(runDir, true)
	if err != nil {
		return nil, "", err
	}
	return a, a.Bin, a.Start(ctx)
}
