package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/store"
	"github.com/flashpipe/flashpipe/internal/store/postgres"
	"github.com/flashpipe/flashpipe/internal/store/storetest"
	"github.com/flashpipe/flashpipe/internal/testutil/pgtest"
	"github.com/flashpipe/flashpipe/migrations"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) flashpipe.Store {
		s, err := postgres.Open(context.Background(), pgtest.URL(t), postgres.Config{AutoMigrate: true})
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		return s
	})
}

func TestSchemaCheck(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.URL(t)
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)

	latest, err := store.LatestVersion(migrations.Postgres)
	if err != nil {
		t.Fatal(err)
	}
	_, err = postgres.New(ctx, pool, postgres.Config{})
	if !errors.Is(err, store.ErrSchemaOutdated) || !strings.Contains(err.Error(), fmt.Sprintf("schema is at version 0, want %d", latest)) ||
		!strings.Contains(err.Error(), "flashpipe migrate") {
		t.Fatalf("New on an empty schema: %v, want ErrSchemaOutdated at version 0", err)
	}

	// Migrators racing on one schema: one applies, the others find nothing to do.
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() { errs[i] = postgres.Migrate(ctx, pool, nil) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Migrate %d: %v", i, err)
		}
	}

	s, err := postgres.New(ctx, pool, postgres.Config{})
	if err != nil {
		t.Fatalf("New on a migrated schema: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Close leaves a caller's pool open.
	if err := pool.Ping(ctx); err != nil {
		t.Fatalf("pool after Close: %v", err)
	}
	if _, err := postgres.New(ctx, nil, postgres.Config{}); err == nil {
		t.Fatal("New with a nil pool succeeded")
	}
}

// Errors must not show the password of the URL they came from.
func TestErrorsHidePassword(t *testing.T) {
	t.Parallel()
	const secret = "s3cr3t-pa55"
	urls := []string{
		"postgres://flashpipe:" + secret + "@127.0.0.1:1/db?sslmode=disable&connect_timeout=2", // nothing listens on port 1
		"postgres://flashpipe:" + secret + "@[::1/db",                                          // unparseable
		"postgres://flashpipe:" + secret + "@127.0.0.1:5432/db?sslmode=bogus",                  // bad option
		"host=127.0.0.1 port=1 user=flashpipe password=" + secret + " connect_timeout=2",
		"host=127.0.0.1 port=1 user=flashpipe password='" + secret + "' sslmode=bogus",
		"postgres://flashpipe:" + secret + "%25@127.0.0.1:1/db?connect_timeout=2&sslmode=disable",
	}
	for _, u := range urls {
		s, err := postgres.Open(context.Background(), u, postgres.Config{AutoMigrate: true})
		if err == nil {
			s.Close()
			t.Errorf("Open succeeded for a bad URL")
			continue
		}
		t.Logf("%v", err)
		if strings.Contains(err.Error(), secret) {
			t.Errorf("error shows the password: %v", err)
		}
	}
}

func BenchmarkApply(b *testing.B) {
	s, err := postgres.Open(context.Background(), pgtest.URL(b), postgres.Config{AutoMigrate: true})
	if err != nil {
		b.Fatalf("Open: %v", err)
	}
	b.Cleanup(func() { s.Close() })
	storetest.BenchmarkApply(b, s)
}

func BenchmarkBatches(b *testing.B) {
	s, err := postgres.Open(context.Background(), pgtest.URL(b), postgres.Config{AutoMigrate: true})
	if err != nil {
		b.Fatalf("Open: %v", err)
	}
	b.Cleanup(func() { s.Close() })
	storetest.BenchmarkBatches(b, s)
}
