package app

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/backoff"
	"github.com/flashpipe/flashpipe/internal/natsx"
	"github.com/flashpipe/flashpipe/internal/store"
	"github.com/flashpipe/flashpipe/internal/store/postgres"
	"github.com/flashpipe/flashpipe/internal/store/sqlite"
)

// Defaults of the connections.
const (
	// DefaultConnectTimeout bounds how long a user command tries to reach NATS or the
	// database before it gives up (services wait as long as it takes: see Wait).
	DefaultConnectTimeout = 10 * time.Second
	// Waits between attempts to reach a dependency grow from DefaultRetryBase to
	// DefaultRetryMax.
	DefaultRetryBase = 250 * time.Millisecond
	DefaultRetryMax  = 10 * time.Second
)

// NATSConfig says how to reach NATS.
type NATSConfig struct {
	// Conn is the server URL(s), credentials and TLS, as natscli names them.
	Conn natsx.ConnOptions
	// Name names the connection on the server (its monitoring pages).
	Name string
	// Wait makes Connect wait, with backoff and a log line per attempt, until NATS
	// and JetStream answer, however long that takes: what a service does, so it can be
	// started before NATS. Without it Connect gives up after ConnectTimeout, as a user
	// command (or a script that wants to fail fast) does.
	Wait bool
	// ConnectTimeout bounds the attempts when Wait is false (DefaultConnectTimeout).
	ConnectTimeout time.Duration
}

// ConnectNATS connects to NATS and waits until JetStream answers (see
// NATSConfig.Wait). The connection reconnects by itself for ever once made.
func ConnectNATS(ctx context.Context, cfg NATSConfig, log *slog.Logger) (*nats.Conn, jetstream.JetStream, error) {
	log = orDiscard(log)
	if !cfg.Wait {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cmp.Or(cfg.ConnectTimeout, DefaultConnectTimeout))
		defer cancel()
	}
	conn, err := cfg.Conn.Resolve()
	if err != nil {
		return nil, nil, err
	}
	url := natsx.RedactURL(conn.URL)
	var nc *nats.Conn
	err = retry(ctx, log, "NATS at "+url, cfg.Wait, func() (err error) {
		nc, err = conn.Connect(cfg.Name, log)
		if errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired) || errors.Is(err, nats.ErrNkeysNotSupported) {
			return flashpipe.AsPermanent(err) // wrong credentials: waiting will not help
		}
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	js, err := natsx.JetStream(nc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	if err := retry(ctx, log, "JetStream at "+url, cfg.Wait, func() error {
		actx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, err := js.AccountInfo(actx)
		return err
	}); err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, js, nil
}

// StoreConfig says which database holds the rows: Postgres when PostgresURL is set,
// else the SQLite file at SQLitePath.
type StoreConfig struct {
	PostgresURL string
	SQLitePath  string
	// AutoMigrate applies pending Postgres migrations (SQLite always migrates).
	AutoMigrate bool
	// Wait makes OpenStore wait, with backoff and a log line per attempt, while the
	// database is unreachable or its schema is older than the code (the migrations
	// have not run yet): what a service does. Without it OpenStore gives up after
	// ConnectTimeout.
	Wait bool
	// ConnectTimeout bounds the attempts when Wait is false (DefaultConnectTimeout).
	ConnectTimeout time.Duration
}

// ErrNoStore is returned by OpenStore when neither a Postgres URL nor a SQLite path
// is given.
var ErrNoStore = errors.New("no database: give a Postgres URL (--postgres-url) or a SQLite file (--sqlite)")

// OpenStore opens the store and returns it with a name for messages ("postgres",
// "sqlite PATH"); see StoreConfig.Wait.
func OpenStore(ctx context.Context, cfg StoreConfig, log *slog.Logger) (flashpipe.Store, string, error) {
	log = orDiscard(log)
	if !cfg.Wait {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cmp.Or(cfg.ConnectTimeout, DefaultConnectTimeout))
		defer cancel()
	}
	var (
		st   flashpipe.Store
		name string
	)
	switch {
	case cfg.PostgresURL != "":
		name = "postgres"
		err := retry(ctx, log, "the database", cfg.Wait, func() (err error) {
			st, err = postgres.Open(ctx, cfg.PostgresURL, postgres.Config{AutoMigrate: cfg.AutoMigrate, Logger: log})
			if errors.Is(err, store.ErrSchemaOutdated) && cfg.Wait {
				return flashpipe.AsTransient(err) // the migrate job may not have run yet
			}
			return err
		})
		return st, name, err
	case cfg.SQLitePath != "":
		if err := os.MkdirAll(filepath.Dir(cfg.SQLitePath), 0o755); err != nil {
			return nil, "", err
		}
		name = "sqlite " + cfg.SQLitePath
		err := retry(ctx, log, "the database", cfg.Wait, func() (err error) {
			st, err = sqlite.Open(ctx, sqlite.Config{Path: cfg.SQLitePath, Logger: log})
			return err
		})
		return st, name, err
	}
	return nil, "", ErrNoStore
}

// retry calls try until it succeeds, it fails permanently, or ctx ends, waiting with
// backoff in between and saying each time what it waits for (a warning when wait is
// set, so an operator sees a service waiting for its dependency; debug otherwise).
func retry(ctx context.Context, log *slog.Logger, what string, wait bool, try func() error) error {
	for attempt := 1; ; attempt++ {
		err := try()
		if err == nil {
			if attempt > 1 {
				log.Info("reached "+what, "attempts", attempt)
			}
			return nil
		}
		if flashpipe.IsPermanent(err) {
			return err
		}
		d := backoff.Delay(attempt, DefaultRetryBase, DefaultRetryMax)
		if wait {
			log.Warn("waiting for "+what, "attempt", attempt, "retry_in", d.Round(time.Millisecond), "err", err)
		} else {
			log.Debug("retrying "+what, "attempt", attempt, "err", err)
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("could not reach %s: %w", what, err)
			}
			return ctx.Err()
		case <-time.After(d):
		}
	}
}

func orDiscard(log *slog.Logger) *slog.Logger {
	if log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return log
}
