-- Batch replacement and dead letters. Keep it in step with postgres/00002_replace_and_dead_letters.sql,
-- which explains the columns.

-- +goose Up

ALTER TABLE batches ADD COLUMN base INTEGER;
UPDATE batches SET base = 0 WHERE manifest IS NOT NULL;

CREATE TABLE dead_letters (
    id         INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    event_key  TEXT    NOT NULL UNIQUE,
    batch_id   TEXT    NOT NULL,
    kind       TEXT    NOT NULL,
    seq        INTEGER NOT NULL,
    event      BLOB    NOT NULL,
    reason     TEXT    NOT NULL,
    at         TEXT    NOT NULL
) STRICT;
CREATE INDEX dead_letters_batch_idx ON dead_letters (batch_id, id);

-- +goose Down
DROP TABLE dead_letters;
ALTER TABLE batches DROP COLUMN base;
