package uplink_test

import (
	"bufio"
	"context"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"medmesh/internal/consulagent"
	"medmesh/internal/testutil"
	"medmesh/internal/uplink"
)

// echo serves one line back per connection.
func echo(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				line, _ := bufio.NewReader(c).ReadString('\n')
				c.Write([]byte(line))
			}()
		}
	}()
	return ln.Addr().String()
}

func roundTrip(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return err
	}
	_, err = bufio.NewReader(c).ReadString('\n')
	return err
}

func TestCutRefusesAndClosesRestoreForwardsAgain(t *testing.T) {
	l, err := uplink.New(echo(t))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := roundTrip(l.Addr()); err != nil {
		t.Fatalf("link up: %v", err)
	}
	// A connection open across the cut is closed by it.
	open, err := net.Dial("tcp", l.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()
	testutil.Poll(t, 5*time.Second, "the open connection to be forwarded", func() bool { return true })

	l.Cut()
	if l.Up() {
		t.Error("Up after Cut")
	}
	if err := roundTrip(l.Addr()); err == nil {
		t.Error("a connection went through a cut link")
	}
	open.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := open.Read(make([]byte, 1)); err == nil {
		t.Error("a connection open before the cut still reads")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Error("a connection open before the cut was left hanging, not closed")
	}

	if err := l.Restore(); err != nil {
		t.Fatal(err)
	}
	if err := roundTrip(l.Addr()); err != nil {
		t.Errorf("after Restore on the same address: %v", err)
	}
}

// TestPeeringThroughALink peers two real Consul datacenters through a
// link, cuts it and restores it: both sides see the peering fail and come
// back, which is what the demo's "cut a site's uplink" relies on.
func TestPeeringThroughALink(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two Consul servers")
	}
	if _, err := consulagent.FindBinary(); err != nil {
		t.Fatalf("%v: this test peers two real Consul datacenters", err)
	}
	ca, err := consulagent.NewPeeringCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	site := func(dc string) *consulagent.Agent {
		a, err := consulagent.NewSite(t.TempDir(), dc, ca, true)
		if err != nil {
			t.Fatal(err)
		}
		return testutil.StartAgent(t, a)
	}
	hub, edge := site("hub"), site("edge")
	l, err := uplink.New(hub.PeeringAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := consulagent.PeerVia(ctx, hub, "hub", edge, "edge", l.Addr()); err != nil {
		t.Fatal(err)
	}
	l.Cut()
	for _, side := range []struct {
		a    *consulagent.Agent
		peer string
	}{{edge, "hub"}, {hub, "edge"}} {
		if err := consulagent.WaitPeering(ctx, side.a, side.peer, api.PeeringStateFailing); err != nil {
			t.Fatalf("after the cut: %v", err)
		}
	}
	if err := l.Restore(); err != nil {
		t.Fatal(err)
	}
	for _, side := range []struct {
		a    *consulagent.Agent
		peer string
	}{{edge, "hub"}, {hub, "edge"}} {
		if err := consulagent.WaitPeering(ctx, side.a, side.peer, api.PeeringStateActive); err != nil {
			t.Fatalf("after the restore: %v", err)
		}
	}
}
