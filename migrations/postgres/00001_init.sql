-- The initial flashpipe schema for PostgreSQL. Keep it in step with sqlite/00001_init.sql.

-- +goose Up

-- One row per batch. The manifest columns are copies of the latest generation's
-- manifest fields, kept for queries; manifest holds the whole manifest as JSON.
-- completed_generation, emitted and completed_at are those of the newest completion.
--
-- The batch state is not stored: it is derived on read. A batch is complete when
-- completed_generation >= generation and at least emitted of its items have a result of
-- generation >= completed_generation; otherwise it is running. Events may be applied in
-- any order (several sink replicas), so a completion may be stored before results it
-- counts, and a stored state would be wrong until they arrive.
--
-- A completion may also be stored before its batch's manifest: the row then holds only
-- the completion, its manifest columns all NULL, and readers do not show it until the
-- manifest arrives.
CREATE TABLE batches (
    batch_id             text        PRIMARY KEY,
    generation           integer,
    item_count           integer,
    source               text,
    content_hash         text,
    settings             jsonb,
    manifest             jsonb,
    -- submitted_at is the earliest created_at of the batch's manifests: its first
    -- submission (generation 0), whatever order the manifests were stored in.
    submitted_at         timestamptz,
    -- started_at is when the first result was stored.
    started_at           timestamptz,
    -- The completion of the newest generation stored (of one generation, the earliest):
    -- its generation, how many results that generation emitted, and when it completed.
    completed_generation integer,
    emitted              integer,
    completed_at         timestamptz,
    updated_at           timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT batches_manifest_whole CHECK (
        (manifest IS NULL AND generation IS NULL AND item_count IS NULL AND source IS NULL
            AND content_hash IS NULL AND submitted_at IS NULL)
        OR (manifest IS NOT NULL AND generation IS NOT NULL AND item_count IS NOT NULL
            AND source IS NOT NULL AND content_hash IS NOT NULL AND submitted_at IS NOT NULL)),
    CONSTRAINT batches_completion_whole CHECK (
        (completed_generation IS NULL) = (emitted IS NULL)
        AND (completed_generation IS NULL) = (completed_at IS NULL)),
    CONSTRAINT batches_not_empty CHECK (manifest IS NOT NULL OR completed_generation IS NOT NULL)
);

CREATE INDEX batches_submitted_at_idx ON batches (submitted_at DESC, batch_id DESC);

-- One row per item: the final result of the newest generation that processed it.
-- No foreign key to batches: a replay may store a result before its manifest.
CREATE TABLE items (
    batch_id          text             NOT NULL,
    position          bigint           NOT NULL,
    -- processing_order is the item's Seq: its 1-based rank within the batch.
    processing_order  integer          NOT NULL,
    generation        integer          NOT NULL,
    term              text             NOT NULL,
    type              text             NOT NULL,
    metadata          jsonb,
    status            text             NOT NULL CHECK (status IN ('ok', 'failed')),
    -- analysis is the stage 1 answer; NULL when stage 1 did not produce one.
    analysis          jsonb,
    -- The error_* columns and next_step are all NULL when the result has no failure.
    error_stage       text,
    error_reason      text,
    error_class       text,
    next_step         text,
    attempts          integer          NOT NULL,
    stage1_calls      integer          NOT NULL,
    stage2_calls      integer          NOT NULL,
    cache_hits        integer          NOT NULL,
    cache_misses      integer          NOT NULL,
    prompt_tokens     bigint           NOT NULL,
    completion_tokens bigint           NOT NULL,
    cost              double precision NOT NULL,
    processed_at      timestamptz      NOT NULL,
    written_at        timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (batch_id, position)
);

-- Results are read in Seq order; a Seq names one item of its batch.
CREATE UNIQUE INDEX items_batch_order_idx ON items (batch_id, processing_order);
-- No index serves the derived batch state: reading a batch sums its items' status and
-- usage in one pass over them (by batch_id, the primary key's prefix), and the count of
-- items of generation >= completed_generation is one more aggregate of that same pass.
-- An index on (batch_id, generation) would save no read and cost every write.

-- One row per card of an item, in the order stage 2 returned them.
CREATE TABLE flashcards (
    batch_id        text    NOT NULL,
    position        bigint  NOT NULL,
    card_index      integer NOT NULL,
    tab_name        text    NOT NULL,
    primer          text    NOT NULL,
    front           text    NOT NULL,
    back            text    NOT NULL,
    tags            text    NOT NULL,
    honorific_level text    NOT NULL,
    PRIMARY KEY (batch_id, position, card_index),
    FOREIGN KEY (batch_id, position) REFERENCES items (batch_id, position) ON DELETE CASCADE
);

-- +goose Down
DROP TABLE flashcards;
DROP TABLE items;
DROP TABLE batches;
