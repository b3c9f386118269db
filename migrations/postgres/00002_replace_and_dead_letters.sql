-- Batch replacement and dead letters. Keep it in step with sqlite/00002_replace_and_dead_letters.sql.

-- +goose Up

-- base is the generation that published the batch's whole item list (the manifest's
-- Base): 0, or the generation of the latest replacement. Results of older generations
-- are never stored once a replacement's manifest is, and the rows they left are
-- deleted when it arrives, so a batch id reused on request never mixes two lists.
-- NULL on a row that holds only a completion.
ALTER TABLE batches ADD COLUMN base integer;
UPDATE batches SET base = 0 WHERE manifest IS NOT NULL;

-- Events the store refused for a reason in the event itself (a constraint its data
-- breaks), kept with the reason until an operator replays them: nothing the sink
-- moves past is lost, even after the ordered stream has dropped it. event_key
-- identifies the event (batch, kind, position or generation), so setting the same
-- event aside twice keeps one row.
CREATE TABLE dead_letters (
    id         bigserial   PRIMARY KEY,
    event_key  text        NOT NULL UNIQUE,
    batch_id   text        NOT NULL,
    kind       text        NOT NULL,
    seq        integer     NOT NULL,
    event      bytea       NOT NULL,
    reason     text        NOT NULL,
    at         timestamptz NOT NULL
);
CREATE INDEX dead_letters_batch_idx ON dead_letters (batch_id, id);

-- +goose Down
DROP TABLE dead_letters;
ALTER TABLE batches DROP COLUMN base;
