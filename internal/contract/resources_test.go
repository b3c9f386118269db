package contract_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashpipe/flashpipe/internal/contract"
	"github.com/flashpipe/flashpipe/internal/testutil/natstest"
)

// The operator configured short retention and a short duplicate window; a service or
// a client started later with the default settings must leave them alone, report the
// difference, and only `streams apply` changes them, after showing the change.
func TestExistingStreamsAreNeverChangedByServices(t *testing.T) {
	srv := natstest.Server(t)
	_, js := natstest.Connect(t, srv.ClientURL())
	ctx := context.Background()
	prefix := natstest.UniquePrefix(t)
	operator, err := contract.New(contract.Config{Prefix: prefix, MaxAge: 25 * time.Second, ItemsMaxAge: 25 * time.Second, ResultsMaxAge: 25 * time.Second, DuplicateWindow: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	// A client finds nothing and says how to create it.
	if err := operator.CheckStreams(ctx, js); !errors.Is(err, contract.ErrMissing) || !strings.Contains(err.Error(), "streams apply") {
		t.Fatalf("CheckStreams on a fresh server = %v, want ErrMissing naming `streams apply`", err)
	}
	if err := operator.EnsureStreams(ctx, js, nil); err != nil {
		t.Fatal(err)
	}
	defaults, err := contract.New(contract.Config{Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	if err := defaults.EnsureStreams(ctx, js, log); err != nil {
		t.Fatal(err)
	}
	if err := defaults.CheckStreams(ctx, js); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{defaults.ItemsStream(), defaults.OrderedStream()} {
		st, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if cfg := st.CachedInfo().Config; cfg.MaxAge != 25*time.Second || cfg.Duplicates != 5*time.Second {
			t.Fatalf("%s: max age %s, duplicate window %s after a default service started; want 25s and 5s kept", name, cfg.MaxAge, cfg.Duplicates)
		}
	}
	out := logs.String()
	for _, want := range []string{"stream " + defaults.ItemsStream() + " differs", "max_age is 25s (configured: 48h0m0s)", "duplicate_window is 5s (configured: 10m0s)", "flashpipe streams apply"} {
		if !strings.Contains(out, want) {
			t.Errorf("the service's warning lacks %q:\n%s", want, out)
		}
	}

	// The operator's command shows the change, then applies it.
	changes, err := contract.Plan(ctx, js, defaults.StreamConfigs(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(changes) != len(defaults.StreamConfigs()) {
		t.Fatalf("plan: %d changes, want one per stream: %v", len(changes), changes)
	}
	if s := changes[0].String(); !strings.Contains(s, "update stream") || !strings.Contains(s, "max_age 25s -> 168h0m0s") {
		t.Fatalf("plan shows %q", s)
	}
	if err := contract.Apply(ctx, js, changes); err != nil {
		t.Fatal(err)
	}
	if changes, err = contract.Plan(ctx, js, defaults.StreamConfigs(), nil); err != nil || len(changes) != 0 {
		t.Fatalf("after apply: plan %v, %v; want nothing left to change", changes, err)
	}
}

func TestBucketsAreCreatedOnceAndNeverChanged(t *testing.T) {
	srv := natstest.Server(t)
	_, js := natstest.Connect(t, srv.ClientURL())
	ctx := context.Background()
	name := strings.ToUpper(natstest.UniquePrefix(t))
	first := jetstream.KeyValueConfig{Bucket: name, History: 1, TTL: time.Minute}
	if _, diffs, err := contract.EnsureKeyValue(ctx, js, first); err != nil || diffs != nil {
		t.Fatalf("create: %v %v", diffs, err)
	}
	other := first
	other.TTL = time.Hour
	other.History = 3
	_, diffs, err := contract.EnsureKeyValue(ctx, js, other)
	if err != nil {
		t.Fatal(err)
	}
	if len(diffs) != 2 || diffs[0].Setting != "history" || diffs[1].String() != "ttl is 1m0s (configured: 1h0m0s)" {
		t.Fatalf("differences %v", diffs)
	}
	kv, err := js.KeyValue(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	st, err := kv.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.TTL() != time.Minute {
		t.Fatalf("bucket TTL changed to %s", st.TTL())
	}
	changes, err := contract.Plan(ctx, js, nil, []jetstream.KeyValueConfig{other})
	if err != nil || len(changes) != 1 {
		t.Fatalf("plan %v %v", changes, err)
	}
	if err := contract.Apply(ctx, js, changes); err != nil {
		t.Fatal(err)
	}
	if st, _ := kv.Status(ctx); st.TTL() != time.Hour || st.History() != 3 {
		t.Fatalf("after apply: ttl %s history %d", st.TTL(), st.History())
	}
}

func TestDuplicateWindowLongerThanMaxAgeIsRefused(t *testing.T) {
	_, err := contract.New(contract.Config{MaxAge: 25 * time.Second, DuplicateWindow: 10 * time.Minute})
	if err == nil || !strings.Contains(err.Error(), "Config.DuplicateWindow (10m0s) must not be longer than Config.MaxAge (25s)") {
		t.Fatalf("New with a 25s max age and a 10m window = %v", err)
	}
	if _, err := contract.New(contract.Config{MaxAge: 25 * time.Second, DuplicateWindow: 20 * time.Second}); err != nil {
		t.Fatal(err)
	}
	if _, err := contract.New(contract.Config{MaxAge: -1}); err != nil {
		t.Fatalf("forever with the default window: %v", err)
	}
	// The default window is not the operator's choice: a stream kept for less
	// remembers ids as long as it keeps the messages.
	if _, err := contract.New(contract.Config{MaxAge: 25 * time.Second}); err != nil {
		t.Fatalf("a short max age with the default window: %v", err)
	}
}
