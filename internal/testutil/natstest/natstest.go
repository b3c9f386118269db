// Package natstest starts embedded NATS servers with JetStream for tests and gives each
// test its own contract (subject prefix and stream names), so tests run in parallel
// against one server without seeing each other's messages.
package natstest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashpipe/flashpipe/internal/contract"
	"github.com/flashpipe/flashpipe/internal/natsx"
)

// Server starts an embedded NATS server with JetStream in t.TempDir(), listening on a
// free loopback port, and shuts it down when the test ends.
func Server(t testing.TB) *natsx.Embedded {
	t.Helper()
	return ServerAt(t, t.TempDir())
}

// ServerAt starts an embedded server whose JetStream store is dir (restart a server on
// the same dir to keep its streams).
func ServerAt(t testing.TB, dir string) *natsx.Embedded {
	t.Helper()
	srv, err := natsx.StartEmbedded(natsx.EmbeddedConfig{StoreDir: dir})
	if err != nil {
		t.Fatalf("start embedded NATS: %v", err)
	}
	t.Cleanup(srv.Shutdown)
	return srv
}

// Connect connects to url and returns the connection and its JetStream API; both are
// closed when the test ends.
func Connect(t testing.TB, url string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := natsx.Connect(url, t.Name(), nil)
	if err != nil {
		t.Fatalf("connect to NATS: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := natsx.JetStream(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// Contract returns a contract with a prefix unique to this test, its streams created.
func Contract(t testing.TB, js jetstream.JetStream) *contract.Contract {
	t.Helper()
	return ContractWith(t, js, contract.Config{})
}

// ContractWith is Contract with more configuration (the prefix is always unique).
func ContractWith(t testing.TB, js jetstream.JetStream, cfg contract.Config) *contract.Contract {
	t.Helper()
	cfg.Prefix = UniquePrefix(t)
	c, err := contract.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.EnsureStreams(ctx, js, nil); err != nil {
		t.Fatal(err)
	}
	return c
}

// UniquePrefix returns a subject prefix unique to this test run.
func UniquePrefix(t testing.TB) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	name := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			return r
		case r >= 'A' && r <= 'Z':
			return r + 'a' - 'A'
		}
		return -1
	}, t.Name())
	if len(name) > 20 {
		name = name[len(name)-20:]
	}
	return "t" + name + hex.EncodeToString(b[:])
}

// Eventually polls cond every few milliseconds until it returns true or the deadline
// passes, then fails the test with msg.
func Eventually(t testing.TB, within time.Duration, cond func() bool, msg string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: "+msg, append([]any{within}, args...)...)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// OrderedKeys reads the headers of every event on a batch's ordered subject, in order.
func OrderedKeys(t testing.TB, js jetstream.JetStream, c *contract.Contract, batch string) []contract.Keys {
	t.Helper()
	ctx := context.Background()
	oc, err := js.OrderedConsumer(ctx, c.OrderedStream(), jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{c.OrderedSubject(batch)}, HeadersOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	info, err := oc.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]contract.Keys, 0, info.NumPending)
	if info.NumPending == 0 {
		return out
	}
	it, err := oc.Messages()
	if err != nil {
		t.Fatal(err)
	}
	defer it.Stop()
	for range info.NumPending {
		msg, err := it.Next(jetstream.NextMaxWait(10 * time.Second))
		if err != nil {
			t.Fatal(err)
		}
		k, err := contract.KeysOf(msg.Headers())
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, k)
	}
	return out
}

// SyncBuffer is a buffer safe for concurrent writers, for the logs of services under
// test.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns what was written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
