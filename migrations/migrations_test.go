package migrations_test

import (
	"context"
	"database/sql"
	"io/fs"
	"path/filepath"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	_ "modernc.org/sqlite"

	"github.com/flashpipe/flashpipe/internal/testutil/pgtest"
	"github.com/flashpipe/flashpipe/migrations"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// The dialects keep the same migration versions, so one version names one schema.
func TestSameVersions(t *testing.T) {
	t.Parallel()
	names := func(fsys fs.FS) []string {
		n, err := fs.Glob(fsys, "*.sql")
		if err != nil || len(n) == 0 {
			t.Fatalf("no migrations: %v", err)
		}
		return n
	}
	pg, lite := names(migrations.Postgres), names(migrations.SQLite)
	if !slices.Equal(pg, lite) {
		t.Fatalf("postgres migrations %v, sqlite migrations %v: want the same files", pg, lite)
	}
}

// Every migration applies, rolls back and applies again.
func TestUpDownUp(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		db, err := sql.Open("sqlite", filepath.Join(t.TempDir(), "m.db"))
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		upDownUp(t, goose.DialectSQLite3, db, migrations.SQLite)
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		pool, err := pgxpool.New(context.Background(), pgtest.URL(t))
		if err != nil {
			t.Fatal(err)
		}
		defer pool.Close()
		db := stdlib.OpenDBFromPool(pool)
		defer db.Close()
		upDownUp(t, goose.DialectPostgres, db, migrations.Postgres)
	})
}

func upDownUp(t *testing.T, dialect goose.Dialect, db *sql.DB, fsys fs.FS) {
	t.Helper()
	ctx := context.Background()
	p, err := goose.NewProvider(dialect, db, fsys, goose.WithDisableGlobalRegistry(true))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Up(ctx); err != nil {
		t.Fatalf("up: %v", err)
	}
	if _, err := p.DownTo(ctx, 0); err != nil {
		t.Fatalf("down: %v", err)
	}
	for _, table := range []string{"batches", "items", "flashcards"} {
		if _, err := db.ExecContext(ctx, "SELECT 1 FROM "+table); err == nil {
			t.Errorf("table %s still exists after down", table)
		}
	}
	if _, err := p.Up(ctx); err != nil {
		t.Fatalf("up again: %v", err)
	}
	sources := p.ListSources()
	if v, err := p.GetDBVersion(ctx); err != nil || v != sources[len(sources)-1].Version {
		t.Fatalf("version %d, %v; want %d", v, err, sources[len(sources)-1].Version)
	}
}
