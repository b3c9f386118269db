-- The initial flashpipe schema for SQLite. Keep it in step with postgres/00001_init.sql.
--
-- SQLite has no jsonb or timestamptz: JSON columns are TEXT holding JSON, and times are
-- TEXT in UTC with microseconds, fixed width ('2006-01-02T15:04:05.000000Z'), so they
-- compare and sort as strings. Tables are STRICT, so a value of the wrong type is refused.

-- +goose Up

-- The batch state is derived on read, not stored; a row may hold only a completion
-- stored before its manifest (see postgres/00001_init.sql for the columns' meaning).
CREATE TABLE batches (
    batch_id             TEXT    NOT NULL PRIMARY KEY,
    generation           INTEGER,
    item_count           INTEGER,
    source               TEXT,
    content_hash         TEXT,
    settings             TEXT,
    manifest             TEXT,
    submitted_at         TEXT,
    started_at           TEXT,
    completed_generation INTEGER,
    emitted              INTEGER,
    completed_at         TEXT,
    updated_at           TEXT    NOT NULL,
    CONSTRAINT batches_manifest_whole CHECK (
        (manifest IS NULL AND generation IS NULL AND item_count IS NULL AND source IS NULL
            AND content_hash IS NULL AND submitted_at IS NULL)
        OR (manifest IS NOT NULL AND generation IS NOT NULL AND item_count IS NOT NULL
            AND source IS NOT NULL AND content_hash IS NOT NULL AND submitted_at IS NOT NULL)),
    CONSTRAINT batches_completion_whole CHECK (
        (completed_generation IS NULL) = (emitted IS NULL)
        AND (completed_generation IS NULL) = (completed_at IS NULL)),
    CONSTRAINT batches_not_empty CHECK (manifest IS NOT NULL OR completed_generation IS NOT NULL)
) STRICT;

CREATE INDEX batches_submitted_at_idx ON batches (submitted_at DESC, batch_id DESC);

-- No foreign key to batches: a replay may store a result before its manifest.
CREATE TABLE items (
    batch_id          TEXT    NOT NULL,
    position          INTEGER NOT NULL,
    processing_order  INTEGER NOT NULL,
    generation        INTEGER NOT NULL,
    term              TEXT    NOT NULL,
    type              TEXT    NOT NULL,
    metadata          TEXT,
    status            TEXT    NOT NULL CHECK (status IN ('ok', 'failed')),
    analysis          TEXT,
    error_stage       TEXT,
    error_reason      TEXT,
    error_class       TEXT,
    next_step         TEXT,
    attempts          INTEGER NOT NULL,
    stage1_calls      INTEGER NOT NULL,
    stage2_calls      INTEGER NOT NULL,
    cache_hits        INTEGER NOT NULL,
    cache_misses      INTEGER NOT NULL,
    prompt_tokens     INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cost              REAL    NOT NULL,
    processed_at      TEXT    NOT NULL,
    written_at        TEXT    NOT NULL,
    PRIMARY KEY (batch_id, position)
) STRICT;

CREATE UNIQUE INDEX items_batch_order_idx ON items (batch_id, processing_order);

CREATE TABLE flashcards (
    batch_id        TEXT    NOT NULL,
    position        INTEGER NOT NULL,
    card_index      INTEGER NOT NULL,
    tab_name        TEXT    NOT NULL,
    primer          TEXT    NOT NULL,
    front           TEXT    NOT NULL,
    back            TEXT    NOT NULL,
    tags            TEXT    NOT NULL,
    honorific_level TEXT    NOT NULL,
    PRIMARY KEY (batch_id, position, card_index),
    FOREIGN KEY (batch_id, position) REFERENCES items (batch_id, position) ON DELETE CASCADE
) STRICT;

-- +goose Down
DROP TABLE flashcards;
DROP TABLE items;
DROP TABLE batches;
