-- papayya schema, version 9: per-run counters kept on write, so reading a run's counts by status, its
-- calls, tokens and cost (runs show, runs list, the dashboard) costs the same for 20 items as for
-- 20 million, instead of a scan of the run's items and ledger rows.
--
-- Each counter is split in shards, one per PostgreSQL backend that changed it (pg_backend_pid()):
-- workers on different connections never wait on one another's counter row, and a read sums the
-- shards. Shard 0 holds what was folded in: the backfill below and, from time to time, the shards of
-- backends that are gone (papayya.counts_compact(), called by the reaper). A shard's value can be
-- negative (a worker moved items out of "queued" that another backend counted in); only sums mean
-- anything. Counters change in the same transaction as the rows they count, so a read sees the same
-- numbers as a count(*) in its snapshot.
--
-- Statement-level triggers with transition tables: a COPY of a million items or an update of a run's
-- items adds one grouped upsert per statement, not one per row.

CREATE TABLE papayya.run_item_counts (
    run_id     uuid NOT NULL,
    tenant_id  text NOT NULL,
    shard      integer NOT NULL,
    status     text NOT NULL,
    n          bigint NOT NULL,
    PRIMARY KEY (run_id, shard, status)
);

CREATE TABLE papayya.run_call_counts (
    run_id          uuid NOT NULL,
    tenant_id       text NOT NULL,
    shard           integer NOT NULL,
    provider        text NOT NULL,
    model           text NOT NULL,
    calls           bigint NOT NULL,
    unpriced_calls  bigint NOT NULL,
    cost_usd        numeric NOT NULL,
    input_tokens    bigint NOT NULL,
    output_tokens   bigint NOT NULL,
    PRIMARY KEY (run_id, shard, provider, model)
);
CREATE INDEX run_call_counts_tenant_idx ON papayya.run_call_counts (tenant_id);

-- Items: +1 per status for rows inserted, -1 for rows deleted, and -1 old / +1 new for rows whose status
-- changed. Grouped and ordered by key, so two statements on one backend's shard never deadlock.
CREATE FUNCTION papayya.count_items() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO papayya.run_item_counts AS c (run_id, tenant_id, shard, status, n)
        SELECT run_id, min(tenant_id), pg_backend_pid(), status, count(*)
        FROM counted_new GROUP BY run_id, status ORDER BY run_id, status
        ON CONFLICT (run_id, shard, status) DO UPDATE SET n = c.n + excluded.n;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO papayya.run_item_counts AS c (run_id, tenant_id, shard, status, n)
        SELECT run_id, min(tenant_id), pg_backend_pid(), status, -count(*)
        FROM counted_old GROUP BY run_id, status ORDER BY run_id, status
        ON CONFLICT (run_id, shard, status) DO UPDATE SET n = c.n + excluded.n;
    ELSE
        INSERT INTO papayya.run_item_counts AS c (run_id, tenant_id, shard, status, n)
        SELECT d.run_id, min(d.tenant_id), pg_backend_pid(), d.status, sum(d.delta)
        FROM (SELECT o.run_id, o.tenant_id, o.status, -1 AS delta
              FROM counted_old o JOIN counted_new n ON n.item_id = o.item_id
              WHERE n.status <> o.status
              UNION ALL
              SELECT n.run_id, n.tenant_id, n.status, 1
              FROM counted_old o JOIN counted_new n ON n.item_id = o.item_id
              WHERE n.status <> o.status) d
        GROUP BY d.run_id, d.status
        HAVING sum(d.delta) <> 0
        ORDER BY d.run_id, d.status
        ON CONFLICT (run_id, shard, status) DO UPDATE SET n = c.n + excluded.n;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER items_count_insert AFTER INSERT ON papayya.items
    REFERENCING NEW TABLE AS counted_new FOR EACH STATEMENT EXECUTE FUNCTION papayya.count_items();
CREATE TRIGGER items_count_update AFTER UPDATE ON papayya.items
    REFERENCING OLD TABLE AS counted_old NEW TABLE AS counted_new
    FOR EACH STATEMENT EXECUTE FUNCTION papayya.count_items();
CREATE TRIGGER items_count_delete AFTER DELETE ON papayya.items
    REFERENCING OLD TABLE AS counted_old FOR EACH STATEMENT EXECUTE FUNCTION papayya.count_items();

-- The ledger: calls, unpriced calls, cost and tokens per run, provider and model. Ledger rows are
-- written once and not changed; an update or delete (an operator's repair) is counted all the same.
-- papayya.add_call_counts takes the changed rows as one signed set (+1 new, -1 old).
CREATE FUNCTION papayya.add_call_counts(rows jsonb) RETURNS void LANGUAGE sql AS $$
INSERT INTO papayya.run_call_counts AS c
    (run_id, tenant_id, shard, provider, model, calls, unpriced_calls, cost_usd, input_tokens,
     output_tokens)
SELECT d.run_id, min(d.tenant_id), pg_backend_pid(), d.provider, d.model, sum(d.sign),
       coalesce(sum(d.sign) FILTER (WHERE d.cost_usd IS NULL), 0), coalesce(sum(d.sign * d.cost_usd), 0),
       sum(d.sign * d.input_tokens), sum(d.sign * d.output_tokens)
FROM jsonb_to_recordset(rows) AS d(run_id uuid, tenant_id text, provider text, model text,
                                   cost_usd numeric, input_tokens bigint, output_tokens bigint,
                                   sign integer)
GROUP BY d.run_id, d.provider, d.model
ORDER BY d.run_id, d.provider, d.model
ON CONFLICT (run_id, shard, provider, model) DO UPDATE
SET calls = c.calls + excluded.calls,
    unpriced_calls = c.unpriced_calls + excluded.unpriced_calls,
    cost_usd = c.cost_usd + excluded.cost_usd,
    input_tokens = c.input_tokens + excluded.input_tokens,
    output_tokens = c.output_tokens + excluded.output_tokens
$$;

CREATE FUNCTION papayya.count_calls() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM papayya.add_call_counts(
            (SELECT jsonb_agg(jsonb_build_object('sign', 1) || to_jsonb(r)) FROM counted_new r));
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM papayya.add_call_counts(
            (SELECT jsonb_agg(jsonb_build_object('sign', -1) || to_jsonb(r)) FROM counted_old r));
    ELSE
        PERFORM papayya.add_call_counts(
            (SELECT jsonb_agg(jsonb_build_object('sign', -1) || to_jsonb(r)) FROM counted_old r)
            || (SELECT jsonb_agg(jsonb_build_object('sign', 1) || to_jsonb(r)) FROM counted_new r));
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER llm_calls_count_insert AFTER INSERT ON papayya.llm_calls
    REFERENCING NEW TABLE AS counted_new FOR EACH STATEMENT EXECUTE FUNCTION papayya.count_calls();
CREATE TRIGGER llm_calls_count_update AFTER UPDATE ON papayya.llm_calls
    REFERENCING OLD TABLE AS counted_old NEW TABLE AS counted_new
    FOR EACH STATEMENT EXECUTE FUNCTION papayya.count_calls();
CREATE TRIGGER llm_calls_count_delete AFTER DELETE ON papayya.llm_calls
    REFERENCING OLD TABLE AS counted_old FOR EACH STATEMENT EXECUTE FUNCTION papayya.count_calls();

-- Fold the shards of backends that are gone into shard 0, and drop counters that sum to nothing (a
-- run whose items were deleted). The reaper calls it every few minutes; any process may. Returns how
-- many shard rows it folded. A backend that reuses a gone backend's pid while this runs waits on the
-- row lock and then counts into a fresh row: no change is lost or counted twice.
CREATE FUNCTION papayya.counts_compact() RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    folded bigint := 0;
    moved bigint;
BEGIN
    WITH gone AS (
        DELETE FROM papayya.run_item_counts c
        WHERE c.shard <> 0
          AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = c.shard)
        RETURNING c.run_id, c.tenant_id, c.status, c.n
    ), sums AS (
        INSERT INTO papayya.run_item_counts AS c (run_id, tenant_id, shard, status, n)
        SELECT run_id, min(tenant_id), 0, status, sum(n) FROM gone
        GROUP BY run_id, status ORDER BY run_id, status
        ON CONFLICT (run_id, shard, status) DO UPDATE SET n = c.n + excluded.n
    )
    SELECT count(*) INTO moved FROM gone;
    folded := folded + moved;
    WITH gone AS (
        DELETE FROM papayya.run_call_counts c
        WHERE c.shard <> 0
          AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = c.shard)
        RETURNING c.*
    ), sums AS (
        INSERT INTO papayya.run_call_counts AS c
            (run_id, tenant_id, shard, provider, model, calls, unpriced_calls, cost_usd, input_tokens,
             output_tokens)
        SELECT run_id, min(tenant_id), 0, provider, model, sum(calls), sum(unpriced_calls), sum(cost_usd),
               sum(input_tokens), sum(output_tokens)
        FROM gone GROUP BY run_id, provider, model ORDER BY run_id, provider, model
        ON CONFLICT (run_id, shard, provider, model) DO UPDATE
        SET calls = c.calls + excluded.calls,
            unpriced_calls = c.unpriced_calls + excluded.unpriced_calls,
            cost_usd = c.cost_usd + excluded.cost_usd,
            input_tokens = c.input_tokens + excluded.input_tokens,
            output_tokens = c.output_tokens + excluded.output_tokens
    )
    SELECT folded + count(*) INTO folded FROM gone;
    DELETE FROM papayya.run_item_counts WHERE shard = 0 AND n = 0;
    DELETE FROM papayya.run_call_counts
    WHERE shard = 0 AND calls = 0 AND cost_usd = 0 AND input_tokens = 0 AND output_tokens = 0;
    RETURN folded;
END
$$;

-- What is already in the store, counted once into shard 0.
INSERT INTO papayya.run_item_counts (run_id, tenant_id, shard, status, n)
SELECT run_id, min(tenant_id), 0, status, count(*) FROM papayya.items GROUP BY run_id, status;
INSERT INTO papayya.run_call_counts
    (run_id, tenant_id, shard, provider, model, calls, unpriced_calls, cost_usd, input_tokens, output_tokens)
SELECT run_id, min(tenant_id), 0, provider, model, count(*), count(*) FILTER (WHERE cost_usd IS NULL),
       coalesce(sum(cost_usd), 0), sum(input_tokens), sum(output_tokens)
FROM papayya.llm_calls GROUP BY run_id, provider, model;
