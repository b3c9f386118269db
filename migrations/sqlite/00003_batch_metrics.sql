-- Per-batch metrics beside the rows. Keep it in step with postgres/00003_batch_metrics.sql,
-- which explains the table and the rules. SQLite has only row-level triggers: each
-- item written adds its delta to its batch's row (one writer, so no lock order to keep).

-- +goose Up

ALTER TABLE items ADD COLUMN retries INTEGER NOT NULL DEFAULT 0;
ALTER TABLE items ADD COLUMN throttled INTEGER NOT NULL DEFAULT 0;
ALTER TABLE items ADD COLUMN rate_limit_waits INTEGER NOT NULL DEFAULT 0;
ALTER TABLE items ADD COLUMN rate_limit_wait_ms INTEGER NOT NULL DEFAULT 0;
ALTER TABLE items ADD COLUMN breaker_waits INTEGER NOT NULL DEFAULT 0;
ALTER TABLE items ADD COLUMN breaker_trips INTEGER NOT NULL DEFAULT 0;

CREATE TABLE batch_metrics (
    batch_id           TEXT    NOT NULL PRIMARY KEY,
    results            INTEGER NOT NULL DEFAULT 0,
    stage1_calls       INTEGER NOT NULL DEFAULT 0,
    stage2_calls       INTEGER NOT NULL DEFAULT 0,
    cache_hits         INTEGER NOT NULL DEFAULT 0,
    cache_misses       INTEGER NOT NULL DEFAULT 0,
    prompt_tokens      INTEGER NOT NULL DEFAULT 0,
    completion_tokens  INTEGER NOT NULL DEFAULT 0,
    retries            INTEGER NOT NULL DEFAULT 0,
    throttled          INTEGER NOT NULL DEFAULT 0,
    rate_limit_waits   INTEGER NOT NULL DEFAULT 0,
    rate_limit_wait_ms INTEGER NOT NULL DEFAULT 0,
    breaker_waits      INTEGER NOT NULL DEFAULT 0,
    breaker_trips      INTEGER NOT NULL DEFAULT 0,
    cost_settled       REAL    NOT NULL DEFAULT 0,
    cost_reserved      REAL    NOT NULL DEFAULT 0,
    first_result_at    TEXT,
    last_result_at     TEXT,
    updated_at         TEXT
) STRICT;

-- +goose StatementBegin
CREATE TRIGGER items_metrics_insert AFTER INSERT ON items
BEGIN
    INSERT INTO batch_metrics (batch_id, results, stage1_calls, stage2_calls, cache_hits, cache_misses, prompt_tokens, completion_tokens, retries, throttled, rate_limit_waits, rate_limit_wait_ms, breaker_waits, breaker_trips,
        cost_settled, first_result_at, last_result_at, updated_at)
    VALUES (NEW.batch_id, 1,
        NEW.stage1_calls,
        NEW.stage2_calls,
        NEW.cache_hits,
        NEW.cache_misses,
        NEW.prompt_tokens,
        NEW.completion_tokens,
        NEW.retries,
        NEW.throttled,
        NEW.rate_limit_waits,
        NEW.rate_limit_wait_ms,
        NEW.breaker_waits,
        NEW.breaker_trips,
        NEW.cost, NEW.processed_at, NEW.processed_at, NEW.written_at)
    ON CONFLICT (batch_id) DO UPDATE SET
        results = results + excluded.results,
        stage1_calls = stage1_calls + excluded.stage1_calls,
        stage2_calls = stage2_calls + excluded.stage2_calls,
        cache_hits = cache_hits + excluded.cache_hits,
        cache_misses = cache_misses + excluded.cache_misses,
        prompt_tokens = prompt_tokens + excluded.prompt_tokens,
        completion_tokens = completion_tokens + excluded.completion_tokens,
        retries = retries + excluded.retries,
        throttled = throttled + excluded.throttled,
        rate_limit_waits = rate_limit_waits + excluded.rate_limit_waits,
        rate_limit_wait_ms = rate_limit_wait_ms + excluded.rate_limit_wait_ms,
        breaker_waits = breaker_waits + excluded.breaker_waits,
        breaker_trips = breaker_trips + excluded.breaker_trips,
        cost_settled = cost_settled + excluded.cost_settled,
        first_result_at = min(coalesce(first_result_at, excluded.first_result_at), excluded.first_result_at),
        last_result_at = max(coalesce(last_result_at, excluded.last_result_at), excluded.last_result_at),
        updated_at = excluded.updated_at;
END;
-- +goose StatementEnd

-- A newer generation adds its row (the older one stays counted); the same generation
-- written again adds the difference.
-- +goose StatementBegin
CREATE TRIGGER items_metrics_update AFTER UPDATE ON items
BEGIN
    INSERT INTO batch_metrics (batch_id, results, stage1_calls, stage2_calls, cache_hits, cache_misses, prompt_tokens, completion_tokens, retries, throttled, rate_limit_waits, rate_limit_wait_ms, breaker_waits, breaker_trips,
        cost_settled, first_result_at, last_result_at, updated_at)
    VALUES (NEW.batch_id, CASE WHEN NEW.generation = OLD.generation THEN 0 ELSE 1 END,
        NEW.stage1_calls - CASE WHEN NEW.generation = OLD.generation THEN OLD.stage1_calls ELSE 0 END,
        NEW.stage2_calls - CASE WHEN NEW.generation = OLD.generation THEN OLD.stage2_calls ELSE 0 END,
        NEW.cache_hits - CASE WHEN NEW.generation = OLD.generation THEN OLD.cache_hits ELSE 0 END,
        NEW.cache_misses - CASE WHEN NEW.generation = OLD.generation THEN OLD.cache_misses ELSE 0 END,
        NEW.prompt_tokens - CASE WHEN NEW.generation = OLD.generation THEN OLD.prompt_tokens ELSE 0 END,
        NEW.completion_tokens - CASE WHEN NEW.generation = OLD.generation THEN OLD.completion_tokens ELSE 0 END,
        NEW.retries - CASE WHEN NEW.generation = OLD.generation THEN OLD.retries ELSE 0 END,
        NEW.throttled - CASE WHEN NEW.generation = OLD.generation THEN OLD.throttled ELSE 0 END,
        NEW.rate_limit_waits - CASE WHEN NEW.generation = OLD.generation THEN OLD.rate_limit_waits ELSE 0 END,
        NEW.rate_limit_wait_ms - CASE WHEN NEW.generation = OLD.generation THEN OLD.rate_limit_wait_ms ELSE 0 END,
        NEW.breaker_waits - CASE WHEN NEW.generation = OLD.generation THEN OLD.breaker_waits ELSE 0 END,
        NEW.breaker_trips - CASE WHEN NEW.generation = OLD.generation THEN OLD.breaker_trips ELSE 0 END,
        NEW.cost - CASE WHEN NEW.generation = OLD.generation THEN OLD.cost ELSE 0 END, NEW.processed_at, NEW.processed_at, NEW.written_at)
    ON CONFLICT (batch_id) DO UPDATE SET
        results = results + excluded.results,
        stage1_calls = stage1_calls + excluded.stage1_calls,
        stage2_calls = stage2_calls + excluded.stage2_calls,
        cache_hits = cache_hits + excluded.cache_hits,
        cache_misses = cache_misses + excluded.cache_misses,
        prompt_tokens = prompt_tokens + excluded.prompt_tokens,
        completion_tokens = completion_tokens + excluded.completion_tokens,
        retries = retries + excluded.retries,
        throttled = throttled + excluded.throttled,
        rate_limit_waits = rate_limit_waits + excluded.rate_limit_waits,
        rate_limit_wait_ms = rate_limit_wait_ms + excluded.rate_limit_wait_ms,
        breaker_waits = breaker_waits + excluded.breaker_waits,
        breaker_trips = breaker_trips + excluded.breaker_trips,
        cost_settled = cost_settled + excluded.cost_settled,
        first_result_at = min(coalesce(first_result_at, excluded.first_result_at), excluded.first_result_at),
        last_result_at = max(coalesce(last_result_at, excluded.last_result_at), excluded.last_result_at),
        updated_at = excluded.updated_at;
END;
-- +goose StatementEnd

INSERT INTO batch_metrics (batch_id, results, stage1_calls, stage2_calls, cache_hits, cache_misses,
    prompt_tokens, completion_tokens, cost_settled, first_result_at, last_result_at, updated_at)
SELECT batch_id, count(*), sum(stage1_calls), sum(stage2_calls), sum(cache_hits), sum(cache_misses),
    sum(prompt_tokens), sum(completion_tokens), sum(cost), min(processed_at), max(processed_at), max(written_at)
FROM items GROUP BY batch_id;

-- +goose Down
DROP TRIGGER items_metrics_update;
DROP TRIGGER items_metrics_insert;
DROP TABLE batch_metrics;
ALTER TABLE items DROP COLUMN breaker_trips;
ALTER TABLE items DROP COLUMN breaker_waits;
ALTER TABLE items DROP COLUMN rate_limit_wait_ms;
ALTER TABLE items DROP COLUMN rate_limit_waits;
ALTER TABLE items DROP COLUMN throttled;
ALTER TABLE items DROP COLUMN retries;
