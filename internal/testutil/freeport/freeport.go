// Package freeport finds free TCP ports on loopback for tests that must tell a child
// process (or a container) which address to listen on.
package freeport

import (
	"net"
	"testing"
)

// List returns n distinct ports that were free on 127.0.0.1 a moment ago: it listens
// on port 0 n times at once and closes the listeners before returning. Another process
// may take one in between; use the ports at once.
func List(t testing.TB, n int) []int {
	t.Helper()
	ports := make([]int, n)
	for i := range ports {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ports[i] = ln.Addr().(*net.TCPAddr).Port
		defer ln.Close()
	}
	return ports
}
