package sqlite_test

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/store/sqlite"
	"github.com/flashpipe/flashpipe/internal/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) flashpipe.Store {
		s, err := sqlite.Open(context.Background(), sqlite.Config{Path: filepath.Join(t.TempDir(), "flashpipe.db")})
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		return s
	})
}

func TestConformanceSynchronousNormal(t *testing.T) {
	storetest.Run(t, func(t *testing.T) flashpipe.Store {
		s, err := sqlite.Open(context.Background(), sqlite.Config{
			Path: filepath.Join(t.TempDir(), "flashpipe.db"), Synchronous: "normal", Readers: 1,
		})
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		return s
	})
}

func TestConfigErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, tc := range []struct {
		cfg   sqlite.Config
		field string
	}{
		{sqlite.Config{}, "Config.Path"},
		{sqlite.Config{Path: filepath.Join(dir, "a.db"), Synchronous: "OFF"}, "Config.Synchronous"},
		{sqlite.Config{Path: filepath.Join(dir, "a.db"), BusyTimeout: -1}, "Config.BusyTimeout"},
		{sqlite.Config{Path: filepath.Join(dir, "a.db"), Readers: -1}, "Config.Readers"},
	} {
		_, err := sqlite.Open(context.Background(), tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.field) || !flashpipe.IsPermanent(err) {
			t.Errorf("Open(%+v) = %v, want a permanent error naming %s", tc.cfg, err, tc.field)
		}
	}
}

// Data survives closing and reopening the file, and reopening migrates nothing twice.
func TestReopen(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	// Characters that mean something in a URI name a file like any other.
	path := filepath.Join(t.TempDir(), "odd ?#%20&name.db")
	s, err := sqlite.Open(ctx, sqlite.Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("database file: %v", err)
	}
	r := storetest.NewResult("reopen", 1, 0)
	if err := s.Apply(ctx, []flashpipe.Event{storetest.ManifestEvent(storetest.NewManifest("reopen", 1, r.ProcessedAt)),
		storetest.ResultEvent(r)}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	s, err = sqlite.Open(ctx, sqlite.Config{Path: path})
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s.Close()
	st, err := s.Batch(ctx, "reopen")
	if err != nil || st.Done != 1 {
		t.Fatalf("after reopen: %+v, %v; want 1 done", st, err)
	}
}

func BenchmarkApply(b *testing.B) {
	for _, sync := range []string{"FULL", "NORMAL"} {
		b.Run("synchronous="+sync, func(b *testing.B) {
			s, err := sqlite.Open(context.Background(), sqlite.Config{Path: filepath.Join(b.TempDir(), "bench.db"), Synchronous: sync})
			if err != nil {
				b.Fatalf("Open: %v", err)
			}
			b.Cleanup(func() { s.Close() })
			storetest.BenchmarkApply(b, s)
		})
	}
}

// While another connection holds the write lock, reads go on (WAL), and a write waits
// BusyTimeout and then fails with a transient error; once the lock is free, it works.
func TestReadsDuringForeignWrite(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "flashpipe.db")
	s, err := sqlite.Open(ctx, sqlite.Config{Path: path, BusyTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	m := storetest.NewManifest("busy", 2, time.Now())
	if err := s.Apply(ctx, []flashpipe.Event{storetest.ManifestEvent(m)}); err != nil {
		t.Fatal(err)
	}

	other, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	conn, err := other.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(ctx, "DELETE FROM batches"); err != nil {
		t.Fatal(err)
	}

	if st, err := s.Batch(ctx, "busy"); err != nil || st.Manifest.Count != 2 {
		t.Fatalf("Batch while another connection writes: %+v, %v", st, err)
	}
	events := []flashpipe.Event{storetest.ResultEvent(storetest.NewResult("busy", 1, 0))}
	err = s.Apply(ctx, events)
	if err == nil || flashpipe.ClassOf(err) != flashpipe.Transient {
		t.Fatalf("Apply while another connection holds the write lock: %v, want a transient error", err)
	}
	if _, err := conn.ExecContext(ctx, "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	if err := s.Apply(ctx, events); err != nil {
		t.Fatalf("Apply after the lock was released: %v", err)
	}
	if st, err := s.Batch(ctx, "busy"); err != nil || st.Done != 1 {
		t.Fatalf("Batch: %+v, %v; want 1 done", st, err)
	}
}

func BenchmarkBatches(b *testing.B) {
	s, err := sqlite.Open(context.Background(), sqlite.Config{Path: filepath.Join(b.TempDir(), "bench.db")})
	if err != nil {
		b.Fatalf("Open: %v", err)
	}
	b.Cleanup(func() { s.Close() })
	storetest.BenchmarkBatches(b, s)
}
