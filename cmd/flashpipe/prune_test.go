package main

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/store"
	"github.com/flashpipe/flashpipe/internal/store/sqlite"
	"github.com/flashpipe/flashpipe/internal/store/storetest"
)

// `flashpipe prune --older-than 90d` deletes the complete batches older than that and
// keeps a running one however old, and refuses an age too short to be meant.
func TestPruneCommand(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	db := filepath.Join(dir, "p.db")
	ctx := context.Background()
	st, err := sqlite.Open(ctx, sqlite.Config{Path: db})
	if err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-100 * 24 * time.Hour)
	events := []flashpipe.Event{
		storetest.ManifestEvent(storetest.NewManifest("old", 2, old)),
		storetest.ResultEvent(storetest.NewResult("old", 1, 0)),
		storetest.ResultEvent(storetest.NewResult("old", 2, 0)),
		storetest.CompleteEvent("old", 0, 2, old.Add(time.Minute)),
		storetest.ManifestEvent(storetest.NewManifest("stuck", 2, old)),
		storetest.ResultEvent(storetest.NewResult("stuck", 1, 0)),
	}
	if err := st.Apply(ctx, events); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	if _, stderr, code := flashpipeCmd(t, dir, "prune", "--older-than", "10m", "--sqlite", db); code == 0 || !strings.Contains(stderr, "at least 1h") {
		t.Fatalf("prune --older-than 10m: exit %d, %s; want a refusal", code, stderr)
	}
	stdout, stderr, code := flashpipeCmd(t, dir, "prune", "--older-than", "90d", "--sqlite", db, "--json")
	if code != 0 {
		t.Fatalf("prune: exit %d: %s", code, stderr)
	}
	var got store.Pruned
	if err := json.Unmarshal([]byte(stdout), &got); err != nil || got != (store.Pruned{Batches: 1, Items: 2}) {
		t.Fatalf("prune printed %q (%v), want 1 batch and 2 items", stdout, err)
	}
	st, err = sqlite.Open(ctx, sqlite.Config{Path: db})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.Batch(ctx, "old"); !errors.Is(err, flashpipe.ErrNotFound) {
		t.Errorf("the old complete batch: %v, want it deleted", err)
	}
	if b, err := st.Batch(ctx, "stuck"); err != nil || b.Done != 1 {
		t.Errorf("the old running batch: %+v, %v; want it kept", b, err)
	}
}
