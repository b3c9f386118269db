// Package tcpproxy is a TCP proxy for tests that change the network under a running
// system: a dependency that is not there yet, goes away (Cut), comes back (Restore),
// or goes silent (Blackhole).
package tcpproxy

import (
	"errors"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Proxy forwards connections from a fixed loopback address to a target. Cut makes
// the target unreachable through it: every open connection is closed and the address
// refuses new ones (its listener is closed); Restore listens on the same address again.
// Blackhole keeps the connections open but forwards nothing (a silent network path)
// until Unblock.
type Proxy struct {
	t      testing.TB
	target string
	addr   string

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]struct{}
	flow  chan struct{} // closed while traffic flows
}

// Start starts a proxy to target on a free loopback address; it is cut when the test
// ends.
func Start(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{t: t, target: target, addr: ln.Addr().String(), conns: map[net.Conn]struct{}{}, flow: make(chan struct{})}
	close(p.flow)
	p.serve(ln)
	t.Cleanup(p.Cut)
	return p
}

// StartCut is Start with the proxy cut: its address refuses connections until
// Restore, like a dependency that is not up yet.
func StartCut(t testing.TB, target string) *Proxy {
	t.Helper()
	p := Start(t, target)
	p.Cut()
	return p
}

// Addr is the address clients connect to.
func (p *Proxy) Addr() string { return p.addr }

func (p *Proxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return // closed by Cut
			}
			go p.forward(c)
		}
	}()
}

func (p *Proxy) forward(client net.Conn) {
	server, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		_ = client.Close()
		return
	}
	p.mu.Lock()
	if p.ln == nil { // cut while dialling
		p.mu.Unlock()
		_ = client.Close()
		_ = server.Close()
		return
	}
	p.conns[client], p.conns[server] = struct{}{}, struct{}{}
	p.mu.Unlock()
	var wg sync.WaitGroup
	pipe := func(dst, src net.Conn) {
		defer wg.Done()
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				p.mu.Lock()
				flow := p.flow
				p.mu.Unlock()
				<-flow // held while blackholed
				if _, werr := dst.Write(buf[:n]); werr != nil {
					break
				}
			}
			if err != nil {
				break
			}
		}
		// One direction ended: end both, as a broken network path would.
		_ = dst.Close()
		_ = src.Close()
	}
	wg.Add(2)
	go pipe(server, client)
	go pipe(client, server)
	wg.Wait()
	p.mu.Lock()
	delete(p.conns, client)
	delete(p.conns, server)
	p.mu.Unlock()
}

// Cut closes every connection through the proxy and refuses new ones until Restore.
// Safe to call when already cut.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln == nil {
		return
	}
	_ = p.ln.Close()
	p.ln = nil
	for c := range p.conns {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0) // reset, not a polite close
		}
		_ = c.Close()
	}
	p.unblockLocked() // held data goes nowhere: its connections are closed
}

// Blackhole stops forwarding without closing anything: both ends see a silent path.
func (p *Proxy) Blackhole() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.flow:
		p.flow = make(chan struct{})
	default: // already blackholed
	}
}

// Unblock forwards again, the held data first.
func (p *Proxy) Unblock() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.unblockLocked()
}

func (p *Proxy) unblockLocked() {
	select {
	case <-p.flow:
	default:
		close(p.flow)
	}
}

// Restore accepts connections again on the same address.
func (p *Proxy) Restore() {
	p.t.Helper()
	var ln net.Listener
	var err error
	deadline := time.Now().Add(10 * time.Second)
	for {
		if ln, err = net.Listen("tcp", p.addr); err == nil {
			break
		}
		if !errors.Is(err, syscall.EADDRINUSE) || time.Now().After(deadline) {
			p.t.Fatalf("proxy: listen again on %s: %v", p.addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	p.serve(ln)
}
