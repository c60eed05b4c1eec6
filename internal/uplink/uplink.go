// Package uplink stands in for a site's network link on loopback: a TCP
// forwarder to one address that can be cut and restored. Peering two
// Consul datacenters through one (Consul dials the addresses in the
// peering token, and the token can name this forwarder) makes "the site
// lost its uplink" something a demo or a test can do to real processes
// on one machine, where there is no network to unplug.
//
// A cut closes the listener and every connection through it, as a link
// whose router resets connections and refuses new ones; both ends see
// their streams end at once. (A link that silently drops packets would be
// noticed later, by heartbeat timeouts; the outcome for a site is the
// same.)
package uplink

import (
	"errors"
	"io"
	"net"
	"sync"
)

// Link forwards every connection made to Addr to its target while it is
// up.
type Link struct {
	target string
	addr   string

	mu    sync.Mutex
	ln    net.Listener // nil while cut
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// New starts a link to target on a free loopback port.
func New(target string) (*Link, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	l := &Link{target: target, addr: ln.Addr().String(), conns: map[net.Conn]struct{}{}}
	l.serve(ln)
	return l, nil
}

// Addr is where callers connect instead of the target; it stays the same
// across a cut and a restore.
func (l *Link) Addr() string { return l.addr }

// Up reports whether the link forwards connections.
func (l *Link) Up() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ln != nil
}

// Cut refuses new connections and closes every open one. Cutting a cut
// link does nothing.
func (l *Link) Cut() {
	l.mu.Lock()
	ln := l.ln
	l.ln = nil
	conns := l.conns
	l.conns = map[net.Conn]struct{}{}
	l.mu.Unlock()
	if ln != nil {
		ln.Close()
	}
	for c := range conns {
		c.Close()
	}
}

// Restore listens on the link's address again. Restoring a link that is
// up does nothing.
func (l *Link) Restore() error {
	l.mu.Lock()
	up := l.ln != nil
	l.mu.Unlock()
	if up {
		return nil
	}
	ln, err := net.Listen("tcp", l.addr)
	if err != nil {
		return err
	}
	l.serve(ln)
	return nil
}

// Close cuts the link for good and waits for its goroutines.
func (l *Link) Close() {
	l.Cut()
	l.wg.Wait()
}

func (l *Link) serve(ln net.Listener) {
	l.mu.Lock()
	l.ln = ln
	l.mu.Unlock()
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return // closed by Cut
			}
			l.wg.Add(1)
			go func() {
				defer l.wg.Done()
				l.forward(ln, c)
			}()
		}
	}()
}

// forward copies both ways between c and a new connection to the target,
// unless the link was cut (or restored on a new listener) meanwhile.
func (l *Link) forward(from net.Listener, c net.Conn) {
	up, err := net.Dial("tcp", l.target)
	if err != nil {
		c.Close()
		return
	}
	l.mu.Lock()
	if l.ln != from {
		l.mu.Unlock()
		c.Close()
		up.Close()
		return
	}
	l.conns[c], l.conns[up] = struct{}{}, struct{}{}
	l.mu.Unlock()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, err := io.Copy(dst, src)
		if err == nil || errors.Is(err, net.ErrClosed) {
			// Half-close so the other side sees the end of the stream.
			if tc, ok := dst.(*net.TCPConn); ok {
				tc.CloseWrite()
			}
		}
		done <- struct{}{}
	}
	go pipe(up, c)
	go pipe(c, up)
	<-done
	<-done
	c.Close()
	up.Close()
	l.mu.Lock()
	delete(l.conns, c)
	delete(l.conns, up)
	l.mu.Unlock()
}
