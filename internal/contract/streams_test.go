package contract_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashpipe/flashpipe/internal/contract"
	"github.com/flashpipe/flashpipe/internal/testutil/natstest"
)

func streamsByName(t *testing.T, c *contract.Contract) map[string]jetstream.StreamConfig {
	t.Helper()
	out := map[string]jetstream.StreamConfig{}
	for _, sc := range c.StreamConfigs() {
		out[sc.Name] = sc
	}
	return out
}

// The defaults: the ordered log and the manifests for a week, items and results for
// two days, every stream S2-compressed, no per-subject limit.
func TestStreamDefaults(t *testing.T) {
	t.Parallel()
	c, err := contract.New(contract.Config{})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]time.Duration{
		c.BatchesStream(): 7 * 24 * time.Hour,
		c.OrderedStream(): 7 * 24 * time.Hour,
		c.ItemsStream():   48 * time.Hour,
		c.ResultsStream(): 48 * time.Hour,
	}
	got := streamsByName(t, c)
	for name, age := range want {
		sc := got[name]
		if sc.MaxAge != age || sc.Compression != jetstream.S2Compression || sc.MaxMsgsPerSubject != 0 || sc.Duplicates != 10*time.Minute {
			t.Errorf("%s: max age %v, compression %v, per subject %d, duplicates %v; want %v, s2, 0, 10m",
				name, sc.MaxAge, sc.Compression, sc.MaxMsgsPerSubject, sc.Duplicates, age)
		}
	}
}

// Per-stream windows, compression off, forever, and a duplicate window kept within a
// short max age (JetStream refuses one longer).
func TestStreamSettings(t *testing.T) {
	t.Parallel()
	c, err := contract.New(contract.Config{MaxAge: -1, ItemsMaxAge: 2 * time.Second, ResultsMaxAge: time.Hour, Compression: contract.CompressionNone})
	if err != nil {
		t.Fatal(err)
	}
	got := streamsByName(t, c)
	for name, want := range map[string][2]time.Duration{
		c.BatchesStream(): {0, 10 * time.Minute},
		c.OrderedStream(): {0, 10 * time.Minute},
		c.ItemsStream():   {2 * time.Second, 2 * time.Second},
		c.ResultsStream(): {time.Hour, 10 * time.Minute},
	} {
		sc := got[name]
		if sc.MaxAge != want[0] || sc.Duplicates != want[1] || sc.Compression != jetstream.NoCompression {
			t.Errorf("%s: max age %v, duplicates %v, compression %v; want %v, %v, none", name, sc.MaxAge, sc.Duplicates, sc.Compression, want[0], want[1])
		}
	}
	for _, tc := range []struct {
		cfg   contract.Config
		field string
	}{
		{contract.Config{Compression: "zstd"}, "Compression"},
		{contract.Config{ItemsMaxAge: 10 * time.Millisecond}, "ItemsMaxAge"},
		{contract.Config{ResultsMaxAge: time.Millisecond}, "ResultsMaxAge"},
		{contract.Config{MaxAge: 500 * time.Millisecond}, "MaxAge"},
	} {
		if _, err := contract.New(tc.cfg); err == nil || !strings.Contains(err.Error(), "Config."+tc.field) {
			t.Errorf("New(%+v) = %v, want an error naming Config.%s", tc.cfg, err, tc.field)
		}
	}
}

// Streams created by an earlier version (uncompressed, every stream kept a week) are
// left alone by a service of this version, and updated in place to the new windows and
// compression by the operator's command (Plan, Apply), keeping their messages.
func TestStreamsUpdatedInPlace(t *testing.T) {
	t.Parallel()
	srv := natstest.Server(t)
	_, js := natstest.Connect(t, srv.ClientURL())
	ctx := context.Background()
	prefix := natstest.UniquePrefix(t)
	old, err := contract.New(contract.Config{Prefix: prefix, Compression: contract.CompressionNone,
		ItemsMaxAge: contract.DefaultMaxAge, ResultsMaxAge: contract.DefaultMaxAge})
	if err != nil {
		t.Fatal(err)
	}
	if err := old.EnsureStreams(ctx, js, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, old.ItemSubject("b", 1), []byte("{}")); err != nil {
		t.Fatal(err)
	}
	c, err := contract.New(contract.Config{Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.EnsureStreams(ctx, js, nil); err != nil {
		t.Fatal(err)
	}
	if st, _ := js.Stream(ctx, c.ItemsStream()); st.CachedInfo().Config.Compression != jetstream.NoCompression {
		t.Fatal("a service changed an existing stream")
	}
	changes, err := contract.Plan(ctx, js, c.StreamConfigs(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := contract.Apply(ctx, js, changes); err != nil {
		t.Fatalf("update to the new settings: %v", err)
	}
	st, err := js.Stream(ctx, c.ItemsStream())
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if cfg := info.Config; cfg.MaxAge != contract.DefaultItemsMaxAge || cfg.Compression != jetstream.S2Compression || info.State.Msgs != 1 {
		t.Errorf("items stream after the update: max age %v, compression %v, %d messages; want %v, s2, 1",
			cfg.MaxAge, cfg.Compression, info.State.Msgs, contract.DefaultItemsMaxAge)
	}
}
