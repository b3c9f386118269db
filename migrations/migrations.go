// Package migrations holds the SQL schema of flashpipe's stores, one directory per
// dialect, embedded into the binary and applied with github.com/pressly/goose/v3.
//
// Each directory is a goose migration set: files named NNNNN_name.sql with
// "-- +goose Up" and "-- +goose Down" sections, applied in version order. A migration
// is never edited once released; a schema change is a new file in both directories,
// so the two dialects keep the same version numbers and the same tables.
//
// The schema (both dialects):
//
//   - batches: one row per batch, the latest generation's manifest and the newest
//     completion. The batch state is not stored but derived on read from the
//     completion and the batch's items. A row may hold only a completion, stored before
//     its manifest; readers skip it until the manifest arrives.
//   - items: one row per (batch_id, position), the latest generation's final result.
//     There is no foreign key to batches: in a replay a result may be stored before
//     its batch's manifest.
//   - flashcards: one row per (batch_id, position, card_index), deleted with its item.
//   - dead_letters: the events the store refused, kept until replayed.
//   - batch_metrics: one row per batch, the usage of every result written for it,
//     summed by triggers on items in the transaction that writes them (00003; see
//     flashpipe.BatchMetrics for the counting rules). Prune deletes it with its batch.
package migrations

import (
	"embed"
	"io/fs"
)

//go:embed postgres/*.sql sqlite/*.sql
var files embed.FS

// Postgres is the migration set for PostgreSQL (goose.DialectPostgres), rooted at the
// migration files. It is read-only.
var Postgres fs.FS = mustSub("postgres")

// SQLite is the migration set for SQLite (goose.DialectSQLite3), rooted at the
// migration files. It is read-only.
var SQLite fs.FS = mustSub("sqlite")

func mustSub(dir string) fs.FS {
	sub, err := fs.Sub(files, dir)
	if err != nil {
		panic(err) // dir is a constant that go:embed has checked
	}
	return sub
}
