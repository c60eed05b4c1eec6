package testutil

import (
	"context"
	"net"
	"testing"
	"time"

	"medmesh/internal/consulagent"
)

// Consul starts a real Consul agent for a test (`-dev` when dev) and stops
// it when the test ends; a test that cannot start one fails, since a real
// Consul is the point of those tests.
func Consul(t testing.TB, dev bool) *consulagent.Agent {
	t.Helper()
	a, err := consulagent.New(t.TempDir(), dev)
	if err != nil {
		t.Fatal(err)
	}
	return StartAgent(t, a)
}

// StartAgent starts a prepared agent (consulagent.New or NewSite) and
// stops it when the test ends.
func StartAgent(t testing.TB, a *consulagent.Agent) *consulagent.Agent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Stop() })
	return a
}

// ListeningApp is a loopback TCP listener that accepts connections and
// drops them: an application a probe finds listening. It closes when the
// test ends.
func ListeningApp(t testing.TB) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return l
}
