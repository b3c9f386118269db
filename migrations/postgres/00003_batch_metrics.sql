-- Per-batch metrics beside the rows. Keep it in step with sqlite/00003_batch_metrics.sql.

-- +goose Up

-- The counters of flashpipe.Usage a result carries beyond calls, tokens and cost.
ALTER TABLE items
    ADD COLUMN retries            integer NOT NULL DEFAULT 0,
    ADD COLUMN throttled          integer NOT NULL DEFAULT 0,
    ADD COLUMN rate_limit_waits   integer NOT NULL DEFAULT 0,
    ADD COLUMN rate_limit_wait_ms bigint  NOT NULL DEFAULT 0,
    ADD COLUMN breaker_waits      integer NOT NULL DEFAULT 0,
    ADD COLUMN breaker_trips      integer NOT NULL DEFAULT 0;

-- One row per batch: the sum of the usage of every result the store wrote for it,
-- kept by the triggers below in the transaction that writes the items, so it is
-- always exactly as current as the rows.
--
-- Each result is counted once: a result of a newer generation than the item's stored
-- one adds its usage (the older generation's stays counted: it was paid for); the
-- same generation written again (a redelivery, a replay) adds the difference, which
-- is nothing when it carries the same values; a result the store does not write (an
-- older generation) adds nothing; deleting rows (a replacement, a prune of the items)
-- takes nothing away. results counts the results counted, first_result_at and
-- last_result_at are the earliest and latest processed_at among them (the wall time
-- is their difference). cost_reserved is what spend caps hold for the batch's calls
-- in flight (0 until they do). The row may exist before its batch's row (results
-- replayed before the manifest); prune deletes it with its batch.
CREATE TABLE batch_metrics (
    batch_id           text             PRIMARY KEY,
    results            bigint           NOT NULL DEFAULT 0,
    stage1_calls       bigint           NOT NULL DEFAULT 0,
    stage2_calls       bigint           NOT NULL DEFAULT 0,
    cache_hits         bigint           NOT NULL DEFAULT 0,
    cache_misses       bigint           NOT NULL DEFAULT 0,
    prompt_tokens      bigint           NOT NULL DEFAULT 0,
    completion_tokens  bigint           NOT NULL DEFAULT 0,
    retries            bigint           NOT NULL DEFAULT 0,
    throttled          bigint           NOT NULL DEFAULT 0,
    rate_limit_waits   bigint           NOT NULL DEFAULT 0,
    rate_limit_wait_ms bigint           NOT NULL DEFAULT 0,
    breaker_waits      bigint           NOT NULL DEFAULT 0,
    breaker_trips      bigint           NOT NULL DEFAULT 0,
    cost_settled       double precision NOT NULL DEFAULT 0,
    cost_reserved      double precision NOT NULL DEFAULT 0,
    first_result_at    timestamptz,
    last_result_at     timestamptz,
    updated_at         timestamptz      NOT NULL DEFAULT now()
);

-- The statement-level triggers add up each statement's rows per batch (the sink
-- writes a whole Apply's items in one statement) into one delta row per batch, and
-- batch_metrics_merge adds the deltas to the batches' rows in batch id order: one
-- update per batch and statement, taken after the item rows' locks, so concurrent
-- sinks do not deadlock on a batch's row.
-- +goose StatementBegin
CREATE FUNCTION batch_metrics_merge(deltas batch_metrics[]) RETURNS void LANGUAGE sql AS $$
    INSERT INTO batch_metrics AS m (batch_id, results, stage1_calls, stage2_calls, cache_hits, cache_misses,
        prompt_tokens, completion_tokens, retries, throttled, rate_limit_waits, rate_limit_wait_ms,
        breaker_waits, breaker_trips, cost_settled, first_result_at, last_result_at)
    SELECT d.batch_id, d.results, d.stage1_calls, d.stage2_calls, d.cache_hits, d.cache_misses,
        d.prompt_tokens, d.completion_tokens, d.retries, d.throttled, d.rate_limit_waits,
        d.rate_limit_wait_ms, d.breaker_waits, d.breaker_trips, d.cost_settled, d.first_result_at,
        d.last_result_at
    FROM unnest(deltas) d ORDER BY d.batch_id
    ON CONFLICT (batch_id) DO UPDATE SET
        results = m.results + excluded.results,
        stage1_calls = m.stage1_calls + excluded.stage1_calls,
        stage2_calls = m.stage2_calls + excluded.stage2_calls,
        cache_hits = m.cache_hits + excluded.cache_hits,
        cache_misses = m.cache_misses + excluded.cache_misses,
        prompt_tokens = m.prompt_tokens + excluded.prompt_tokens,
        completion_tokens = m.completion_tokens + excluded.completion_tokens,
        retries = m.retries + excluded.retries,
        throttled = m.throttled + excluded.throttled,
        rate_limit_waits = m.rate_limit_waits + excluded.rate_limit_waits,
        rate_limit_wait_ms = m.rate_limit_wait_ms + excluded.rate_limit_wait_ms,
        breaker_waits = m.breaker_waits + excluded.breaker_waits,
        breaker_trips = m.breaker_trips + excluded.breaker_trips,
        cost_settled = m.cost_settled + excluded.cost_settled,
        first_result_at = least(m.first_result_at, excluded.first_result_at),
        last_result_at = greatest(m.last_result_at, excluded.last_result_at),
        updated_at = now()
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE FUNCTION items_metrics_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM batch_metrics_merge(ARRAY(
        SELECT ROW(n.batch_id, count(*), sum(n.stage1_calls), sum(n.stage2_calls), sum(n.cache_hits),
            sum(n.cache_misses), sum(n.prompt_tokens), sum(n.completion_tokens), sum(n.retries),
            sum(n.throttled), sum(n.rate_limit_waits), sum(n.rate_limit_wait_ms), sum(n.breaker_waits),
            sum(n.breaker_trips), sum(n.cost), 0, min(n.processed_at), max(n.processed_at), now())::batch_metrics
        FROM new_rows n GROUP BY n.batch_id));
    RETURN NULL;
END
$$;
-- +goose StatementEnd

-- A newer generation adds its row (the older one stays counted); the same generation
-- written again adds the difference.
-- +goose StatementBegin
CREATE FUNCTION items_metrics_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM batch_metrics_merge(ARRAY(
        SELECT ROW(n.batch_id, sum(CASE WHEN s THEN 0 ELSE 1 END),
            sum(n.stage1_calls - CASE WHEN s THEN o.stage1_calls ELSE 0 END),
            sum(n.stage2_calls - CASE WHEN s THEN o.stage2_calls ELSE 0 END),
            sum(n.cache_hits - CASE WHEN s THEN o.cache_hits ELSE 0 END),
            sum(n.cache_misses - CASE WHEN s THEN o.cache_misses ELSE 0 END),
            sum(n.prompt_tokens - CASE WHEN s THEN o.prompt_tokens ELSE 0 END),
            sum(n.completion_tokens - CASE WHEN s THEN o.completion_tokens ELSE 0 END),
            sum(n.retries - CASE WHEN s THEN o.retries ELSE 0 END),
            sum(n.throttled - CASE WHEN s THEN o.throttled ELSE 0 END),
            sum(n.rate_limit_waits - CASE WHEN s THEN o.rate_limit_waits ELSE 0 END),
            sum(n.rate_limit_wait_ms - CASE WHEN s THEN o.rate_limit_wait_ms ELSE 0 END),
            sum(n.breaker_waits - CASE WHEN s THEN o.breaker_waits ELSE 0 END),
            sum(n.breaker_trips - CASE WHEN s THEN o.breaker_trips ELSE 0 END),
            sum(n.cost - CASE WHEN s THEN o.cost ELSE 0 END), 0,
            min(n.processed_at), max(n.processed_at), now())::batch_metrics
        FROM new_rows n JOIN old_rows o ON o.batch_id = n.batch_id AND o.position = n.position
        CROSS JOIN LATERAL (SELECT n.generation = o.generation AS s) same
        GROUP BY n.batch_id));
    RETURN NULL;
END
$$;
-- +goose StatementEnd

CREATE TRIGGER items_metrics_insert AFTER INSERT ON items
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION items_metrics_inserted();
CREATE TRIGGER items_metrics_update AFTER UPDATE ON items
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION items_metrics_updated();

-- The batches written before this migration: their stored rows, once each.
INSERT INTO batch_metrics (batch_id, results, stage1_calls, stage2_calls, cache_hits, cache_misses,
    prompt_tokens, completion_tokens, cost_settled, first_result_at, last_result_at)
SELECT batch_id, count(*), sum(stage1_calls), sum(stage2_calls), sum(cache_hits), sum(cache_misses),
    sum(prompt_tokens), sum(completion_tokens), sum(cost), min(processed_at), max(processed_at)
FROM items GROUP BY batch_id;

-- +goose Down
DROP TRIGGER items_metrics_update ON items;
DROP TRIGGER items_metrics_insert ON items;
DROP FUNCTION items_metrics_updated();
DROP FUNCTION items_metrics_inserted();
DROP FUNCTION batch_metrics_merge(batch_metrics[]);
DROP TABLE batch_metrics;
ALTER TABLE items DROP COLUMN retries, DROP COLUMN throttled, DROP COLUMN rate_limit_waits,
    DROP COLUMN rate_limit_wait_ms, DROP COLUMN breaker_waits, DROP COLUMN breaker_trips;
