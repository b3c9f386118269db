package natsx_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashpipe/flashpipe/internal/natsx"
	"github.com/flashpipe/flashpipe/internal/testutil/natstest"
)

// EnsureStream and EnsureKeyValue create what is missing, change nothing (send no
// create or update request) when all is as configured, and update what differs.
func TestEnsureChangesOnlyWhatDiffers(t *testing.T) {
	t.Parallel()
	srv := natstest.Server(t)
	nc, js := natstest.Connect(t, srv.ClientURL())
	var changes atomic.Int64
	for _, subj := range []string{"$JS.API.STREAM.CREATE.>", "$JS.API.STREAM.UPDATE.>"} {
		sub, err := nc.Subscribe(subj, func(*nats.Msg) { changes.Add(1) })
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Unsubscribe()
	}
	ctx := context.Background()
	scfg := jetstream.StreamConfig{Name: "ENSURE", Subjects: []string{"ensure.>"}, MaxAge: time.Hour, Duplicates: time.Minute, AllowDirect: true}
	kcfg := jetstream.KeyValueConfig{Bucket: "ENSURE_KV", Description: "test", TTL: time.Hour}
	expect := func(step string, want int64) {
		t.Helper()
		natstest.Eventually(t, 5*time.Second, func() bool { return changes.Load() == want }, "%s: %d create/update requests, want %d", step, changes.Load(), want)
		time.Sleep(20 * time.Millisecond)
		if got := changes.Load(); got != want {
			t.Fatalf("%s: %d create/update requests, want %d", step, got, want)
		}
	}
	ensure := func() {
		t.Helper()
		if _, err := natsx.EnsureStream(ctx, js, scfg); err != nil {
			t.Fatal(err)
		}
		if _, err := natsx.EnsureKeyValue(ctx, js, kcfg); err != nil {
			t.Fatal(err)
		}
	}
	ensure()
	expect("created", 2)
	ensure()
	expect("unchanged", 2)
	scfg.MaxAge, kcfg.TTL = 2*time.Hour, 2*time.Hour
	ensure()
	expect("updated", 4)
	st, _ := js.Stream(ctx, "ENSURE")
	kv, _ := js.KeyValue(ctx, "ENSURE_KV")
	status, _ := kv.Status(ctx)
	if st.CachedInfo().Config.MaxAge != 2*time.Hour || status.TTL() != 2*time.Hour {
		t.Fatalf("not updated: stream max age %v, bucket TTL %v", st.CachedInfo().Config.MaxAge, status.TTL())
	}
}
