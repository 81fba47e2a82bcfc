-- Named queries of the papayya store. Each starts with a "-- name: NAME" line; parameters are
-- %(name)s placeholders, always bound by psycopg, never formatted into the text.
-- Reads that accept %(tenant_id)s = NULL are operator reads across tenants (the CLI); every write and
-- every read on a tenant's behalf passes the tenant.

-- name: tenant_upsert
INSERT INTO papayya.tenants (tenant_id, config)
VALUES (%(tenant_id)s, %(config)s)
ON CONFLICT (tenant_id) DO NOTHING
RETURNING tenant_id;

-- name: tenant_get
SELECT tenant_id, config, budget_usd, budget_period, max_running, created_at, updated_at
FROM papayya.tenants WHERE tenant_id = %(tenant_id)s;

-- name: tenant_list
SELECT t.tenant_id, t.config, t.created_at, t.updated_at,
       (SELECT count(*) FROM papayya.runs r WHERE r.tenant_id = t.tenant_id) AS runs,
       (SELECT coalesce(sum(c.cost_usd), 0) FROM papayya.llm_calls c WHERE c.tenant_id = t.tenant_id) AS spend_usd,
       (SELECT count(*) FROM papayya.llm_calls c
         WHERE c.tenant_id = t.tenant_id AND c.cost_usd IS NULL) AS unpriced_calls
FROM papayya.tenants t
ORDER BY t.tenant_id
LIMIT %(limit)s;

-- name: tenant_merge_config
UPDATE papayya.tenants
SET config = (config || %(set)s) - %(unset)s::text[], updated_at = now()
WHERE tenant_id = %(tenant_id)s
RETURNING tenant_id;

-- name: price_override_upsert
INSERT INTO papayya.price_overrides
    (tenant_id, provider, model, input_mtok, output_mtok, cache_read_mtok, cache_write_mtok)
VALUES (%(tenant_id)s, %(provider)s, %(model)s, %(input_mtok)s, %(output_mtok)s,
        %(cache_read_mtok)s, %(cache_write_mtok)s)
ON CONFLICT (tenant_id, provider, model) DO UPDATE
SET input_mtok = excluded.input_mtok, output_mtok = excluded.output_mtok,
    cache_read_mtok = excluded.cache_read_mtok, cache_write_mtok = excluded.cache_write_mtok,
    updated_at = now();

-- name: price_override_delete
DELETE FROM papayya.price_overrides
WHERE tenant_id = %(tenant_id)s AND provider = %(provider)s AND model = %(model)s;

-- name: price_overrides_for_tenant
SELECT tenant_id, provider, model, input_mtok, output_mtok, cache_read_mtok, cache_write_mtok
FROM papayya.price_overrides WHERE tenant_id = %(tenant_id)s ORDER BY provider, model;

-- name: run_insert
INSERT INTO papayya.runs (run_id, tenant_id, agent_name, name, backend, total_items, options, replayed_from,
                          budget_usd, entrypoint, priority)
VALUES (%(run_id)s, %(tenant_id)s, %(agent_name)s, %(name)s, %(backend)s, %(total_items)s, %(options)s,
        %(replayed_from)s, %(budget_usd)s, %(entrypoint)s, %(priority)s);

-- name: attempt_begin
WITH claimed AS (
    UPDATE papayya.items
    SET status = 'running', attempts = attempts + 1, stalls = stalls + (status = 'running')::int,
        lease_token = nextval('papayya.lease_token_seq'),
        lease_expires_at = now() + make_interval(secs => %(lease_seconds)s),
        updated_at = now()
    WHERE item_id = %(item_id)s AND tenant_id = %(tenant_id)s AND run_id = %(run_id)s
      -- queued; stalled (its worker was lost and the reaper flagged it); paused in a run that is
      -- running (it saw a pause a resume lifted meanwhile; the run's status is the truth); or
      -- redelivered by a broker after its worker died, before the reaper got to it (its lease
      -- expired: a stall)
      AND (status IN ('queued', 'stalled', 'paused') OR (status = 'running' AND lease_expires_at < now()))
      AND stalls + (status = 'running')::int < %(max_stalls)s
      AND EXISTS (SELECT 1 FROM papayya.runs r
                  WHERE r.run_id = items.run_id AND r.tenant_id = items.tenant_id AND r.status = 'running')
    RETURNING item_id, run_id, tenant_id, attempts, lease_token, input, replayed_from
), stalled AS (
    -- the attempt of a worker that died is kept, as stalled
    UPDATE papayya.attempts a SET status = 'stalled', finished_at = now()
    FROM claimed c WHERE a.item_id = c.item_id AND a.status = 'running'
), attempt AS (
    INSERT INTO papayya.attempts (attempt_id, item_id, run_id, tenant_id, number, backend, worker, lease_token)
    SELECT %(attempt_id)s, item_id, run_id, tenant_id, attempts, %(backend)s, %(worker)s, lease_token
    FROM claimed
    RETURNING attempt_id
)
SELECT c.attempts, c.lease_token, c.replayed_from,
       coalesce(c.input, (SELECT n.input FROM papayya.item_inputs n WHERE n.item_id = c.item_id AND n.tenant_id = c.tenant_id)) AS input,
       (SELECT coalesce(jsonb_object_agg(s.step_key,
                                         jsonb_build_object('result', s.result, 'hash', s.request_hash)),
                       '{}'::jsonb)
          FROM papayya.steps s
          WHERE s.item_id = c.item_id
             -- a from-journal replay answers from the original item's recorded steps
             OR (s.item_id = c.replayed_from
                 AND (SELECT r.from_journal FROM papayya.runs r WHERE r.run_id = c.run_id))) AS journal,
       (SELECT r.from_journal FROM papayya.runs r WHERE r.run_id = c.run_id) AS from_journal,
       -- the claim saw the run running at this control generation (papayya.runstate)
       (SELECT r.gen FROM papayya.runs r WHERE r.run_id = c.run_id) AS run_gen,
       (SELECT count(*) FROM papayya.attempts a WHERE a.item_id = c.item_id AND a.status = 'failed')
           AS failures,
       (SELECT count(*) FROM attempt) AS inserted
FROM claimed c;

-- name: step_record
-- A step reached again with a different request replaces the result recorded for the old one.
INSERT INTO papayya.steps (item_id, step_key, tenant_id, attempt_id, kind, result, request_hash)
VALUES (%(item_id)s, %(step_key)s, %(tenant_id)s, %(attempt_id)s, %(kind)s, %(result)s, %(request_hash)s)
ON CONFLICT (item_id, step_key) DO UPDATE
SET result = excluded.result, request_hash = excluded.request_hash, attempt_id = excluded.attempt_id,
    created_at = now()
WHERE steps.request_hash IS DISTINCT FROM excluded.request_hash;

-- name: llm_call_record
-- The ledger row and, for a journaled call (%(journal)s), its journal step: one round trip. The call's
-- cost is added to its item at once, so an item's cost always equals its ledger rows, whenever they
-- come (a call paid by a worker whose lease had moved on included: flagged lease_lost, never dropped).
-- A provider batch's answer (%(mode)s 'batch') is written by the batcher, which holds no lease.
WITH item AS (
    UPDATE papayya.items i
    SET cost_usd = i.cost_usd + coalesce(%(cost_usd)s::numeric, 0),
        cost_unknown = i.cost_unknown OR %(cost_usd)s::numeric IS NULL
    WHERE i.item_id = %(item_id)s AND i.tenant_id = %(tenant_id)s
    RETURNING i.status = 'running' AND i.lease_token IS NOT DISTINCT FROM %(lease_token)s::bigint AS held
), journal AS (
    INSERT INTO papayya.steps (item_id, step_key, tenant_id, attempt_id, kind, result, request_hash)
    SELECT %(item_id)s, %(step_key)s, %(tenant_id)s, %(attempt_id)s, 'llm', %(result)s, %(request_hash)s
    WHERE %(journal)s
    ON CONFLICT (item_id, step_key) DO UPDATE
    SET result = excluded.result, request_hash = excluded.request_hash, attempt_id = excluded.attempt_id,
        created_at = now()
    WHERE steps.request_hash IS DISTINCT FROM excluded.request_hash
)
INSERT INTO papayya.llm_calls
    (tenant_id, run_id, item_id, attempt_id, step_key, provider, model, input_tokens, output_tokens,
     cache_read_tokens, cache_write_tokens, stop_reason, latency_ms, cost_usd, price_source,
     idempotency_key, reserved_usd, lease_token, lease_lost, mode, live_cost_usd)
VALUES (%(tenant_id)s, %(run_id)s, %(item_id)s, %(attempt_id)s, %(step_key)s, %(provider)s, %(model)s,
        %(input_tokens)s, %(output_tokens)s, %(cache_read_tokens)s, %(cache_write_tokens)s,
        %(stop_reason)s, %(latency_ms)s, %(cost_usd)s, %(price_source)s, %(idempotency_key)s,
        %(reserved_usd)s, %(lease_token)s,
        %(mode)s = 'live' AND NOT coalesce((SELECT held FROM item), false), %(mode)s, %(live_cost_usd)s)
RETURNING lease_lost;

-- name: leases_extend
-- Rows are locked in item id order, as every statement that changes many items does: no deadlocks;
-- each looked up by its id (see attempts_begin in engine.sql).
WITH held AS (
    SELECT i.item_id
    FROM (SELECT * FROM unnest(%(item_ids)s::uuid[], %(tokens)s::bigint[]) AS u(item_id, token)
          ORDER BY item_id) v
    CROSS JOIN LATERAL (
        SELECT i.item_id FROM papayya.items i
        WHERE i.item_id = v.item_id AND i.lease_token = v.token AND i.status = 'running'
        FOR UPDATE
    ) i
)
UPDATE papayya.items i
SET lease_expires_at = now() + make_interval(secs => %(lease_seconds)s)
FROM held
WHERE i.item_id = held.item_id
RETURNING i.item_id;

-- name: attempts_concluded
-- Of the (item, lease token) pairs a heartbeat could not extend, the items whose attempt under that token
-- concluded (its result was written): they were not lost, their holder finished them while the
-- heartbeat was on its way. Read in a statement of its own, after the heartbeat's, so a conclusion that
-- committed while the heartbeat ran is seen.
SELECT a.item_id
FROM papayya.attempts a
JOIN unnest(%(item_ids)s::uuid[], %(tokens)s::bigint[]) AS u(item_id, token)
  ON a.item_id = u.item_id AND a.lease_token = u.token
WHERE a.status NOT IN ('running', 'stalled');

-- name: runs_lock
-- The serialisation point of a run's completion: whoever concludes items of a run holds its row until
-- it commits (in run id order, so two finishers never deadlock). NO KEY UPDATE: a claim inserting an
-- attempt checks its foreign key to the run (KEY SHARE), and must not wait on a finisher.
SELECT run_id FROM papayya.runs WHERE run_id = ANY(%(run_ids)s::uuid[]) ORDER BY run_id FOR NO KEY UPDATE;

-- name: runs_complete
-- Runs with nothing left to do become completed. An intake run (items adopted from a queue's own
-- messages, one run per tenant, agent, backend and UTC day) stays open for intake during its day and
-- completes at the first conclusion (or reaper sweep) after its day is over.
-- Workers ask after every batch of conclusions, so the question must cost the same for the first
-- batch of a million-item run as for its last: the run's counters (0009_run_counters, kept in the
-- same transactions as the items they count) say which runs still have live items, and only a run
-- they call finished has its items read to confirm it (a scan of a run's concluded items, every few
-- milliseconds, made draining a long run quadratic where the planner's statistics were stale).
WITH busy AS MATERIALIZED (
    SELECT c.run_id FROM papayya.run_item_counts c
    WHERE c.run_id = ANY(%(run_ids)s::uuid[]) AND c.status IN ('queued', 'running', 'paused', 'stalled', 'waiting')
    GROUP BY c.run_id
    HAVING sum(c.n) > 0
), done AS (
    UPDATE papayya.runs r
    SET status = 'completed', finished_at = now(), gen = r.gen + 1
    WHERE r.run_id = ANY(%(run_ids)s::uuid[]) AND r.status = 'running'
      AND r.run_id NOT IN (SELECT run_id FROM busy)
      AND NOT (r.options ? 'intake'
               AND (r.created_at AT TIME ZONE 'UTC')::date >= (now() AT TIME ZONE 'UTC')::date)
      AND NOT EXISTS (SELECT 1 FROM papayya.items i
                      WHERE i.run_id = r.run_id AND i.tenant_id = r.tenant_id
                        AND i.status IN ('queued', 'running', 'paused', 'stalled', 'waiting'))
    RETURNING r.run_id, r.gen
)
SELECT done.run_id, done.gen,
       pg_notify('papayya_control', 'run ' || done.gen || ' completed ' || done.run_id) AS notified
FROM done;

-- name: runs_open_finished
-- Running runs with nothing left to do: intake runs whose day is over, runs whose last item the reaper
-- failed. The reaper completes them.
SELECT r.run_id FROM papayya.runs r
WHERE r.status = 'running'
  AND NOT EXISTS (SELECT 1 FROM papayya.items i
                  WHERE i.run_id = r.run_id AND i.tenant_id = r.tenant_id
                    AND i.status IN ('queued', 'running', 'paused', 'stalled', 'waiting'))
LIMIT 1000;

-- name: run_get
SELECT run_id, tenant_id, agent_name, name, backend, status, replayed_from, total_items, options,
       created_at, finished_at, budget_usd, paused_reason, entrypoint, from_journal, replay_slice
FROM papayya.runs
WHERE run_id = %(run_id)s AND (%(tenant_id)s::text IS NULL OR tenant_id = %(tenant_id)s);

-- name: run_status_counts
-- From the per-run counters (migration 0009), not a scan of the run's items.
SELECT status, sum(n)::bigint AS n
FROM papayya.run_item_counts
WHERE run_id = %(run_id)s AND tenant_id = %(tenant_id)s
GROUP BY status
HAVING sum(n) <> 0;

-- name: run_cost
SELECT coalesce(sum(cost_usd), 0) AS cost_usd,
       coalesce(sum(unpriced_calls), 0)::bigint AS unpriced_calls,
       coalesce(sum(calls), 0)::bigint AS calls,
       coalesce(sum(input_tokens), 0)::bigint AS input_tokens,
       coalesce(sum(output_tokens), 0)::bigint AS output_tokens
FROM papayya.run_call_counts
WHERE run_id = %(run_id)s AND tenant_id = %(tenant_id)s;

-- name: run_top_reasons
SELECT r.value ->> 'code' AS code, r.value ->> 'path' AS path, count(*) AS n,
       (array_agg(i.key ORDER BY i.key))[1:3] AS sample_keys
FROM papayya.items i, jsonb_array_elements(i.reasons) AS r(value)
WHERE i.run_id = %(run_id)s AND i.tenant_id = %(tenant_id)s AND i.status = 'degraded'
GROUP BY 1, 2
ORDER BY n DESC, code, path
LIMIT %(limit)s;

-- name: run_top_failures
SELECT i.fingerprint, i.error ->> 'type' AS type, i.error ->> 'category' AS category,
       i.error ->> 'frame' AS frame, min(i.error ->> 'pattern') AS pattern, count(*) AS n,
       (array_agg(i.key ORDER BY i.key))[1:3] AS sample_keys
FROM papayya.items i
WHERE i.run_id = %(run_id)s AND i.tenant_id = %(tenant_id)s AND i.status = 'failed'
GROUP BY 1, 2, 3, 4
ORDER BY n DESC
LIMIT %(limit)s;

-- name: run_cost_by_model
SELECT provider, model, sum(calls)::bigint AS calls, sum(cost_usd) AS cost_usd,
       sum(unpriced_calls)::bigint AS unpriced_calls,
       sum(input_tokens)::bigint AS input_tokens, sum(output_tokens)::bigint AS output_tokens
FROM papayya.run_call_counts
WHERE run_id = %(run_id)s AND tenant_id = %(tenant_id)s
GROUP BY provider, model
HAVING sum(calls) <> 0
ORDER BY cost_usd DESC;

-- name: items_page
SELECT item_id, run_id, tenant_id, key, status, attempts, reasons, error ->> 'type' AS error_type,
       fingerprint, cost_usd, cost_unknown, updated_at
FROM papayya.items
WHERE run_id = %(run_id)s AND (%(tenant_id)s::text IS NULL OR tenant_id = %(tenant_id)s)
  AND (%(status)s::text IS NULL OR status = %(status)s)
  AND (%(after)s::text IS NULL OR key > %(after)s)
ORDER BY key
LIMIT %(limit)s;

-- name: item_get
SELECT i.item_id, i.run_id, i.tenant_id, i.key, coalesce(i.input, (SELECT n.input FROM papayya.item_inputs n WHERE n.item_id = i.item_id AND n.tenant_id = i.tenant_id)) AS input,
       i.status, i.attempts, i.max_attempts, i.reasons, i.output, i.error, i.fingerprint, i.cost_usd,
       i.cost_unknown, i.replayed_from, i.created_at, i.updated_at, i.finished_at
FROM papayya.items i
WHERE i.item_id = %(item_id)s AND (%(tenant_id)s::text IS NULL OR i.tenant_id = %(tenant_id)s);

-- name: item_attempts
SELECT attempt_id, number, backend, worker, status, reasons, output, error, fingerprint, cost_usd,
       cost_unknown, started_at, finished_at
FROM papayya.attempts
WHERE item_id = %(item_id)s AND tenant_id = %(tenant_id)s
ORDER BY number;

-- name: item_steps
SELECT step_key, kind, attempt_id, result, created_at
FROM papayya.steps
WHERE item_id = %(item_id)s AND tenant_id = %(tenant_id)s
ORDER BY created_at, step_key;

-- name: item_llm_calls
SELECT attempt_id, step_key, provider, model, input_tokens, output_tokens, cache_read_tokens,
       cache_write_tokens, stop_reason, latency_ms, cost_usd, price_source, idempotency_key, created_at
FROM papayya.llm_calls
WHERE item_id = %(item_id)s AND tenant_id = %(tenant_id)s
ORDER BY call_id;

-- name: costs_by_tenant
SELECT c.tenant_id AS key, count(*) AS calls, coalesce(sum(c.cost_usd), 0) AS cost_usd,
       count(*) FILTER (WHERE c.cost_usd IS NULL) AS unpriced_calls,
       sum(c.input_tokens) AS input_tokens, sum(c.output_tokens) AS output_tokens
FROM papayya.llm_calls c
WHERE c.created_at >= %(since)s AND c.created_at < %(until)s
  AND (%(tenant_id)s::text IS NULL OR c.tenant_id = %(tenant_id)s)
GROUP BY 1 ORDER BY cost_usd DESC, key;

-- name: costs_by_run
SELECT c.run_id::text AS key, count(*) AS calls, coalesce(sum(c.cost_usd), 0) AS cost_usd,
       count(*) FILTER (WHERE c.cost_usd IS NULL) AS unpriced_calls,
       sum(c.input_tokens) AS input_tokens, sum(c.output_tokens) AS output_tokens
FROM papayya.llm_calls c
WHERE c.created_at >= %(since)s AND c.created_at < %(until)s
  AND (%(tenant_id)s::text IS NULL OR c.tenant_id = %(tenant_id)s)
GROUP BY 1 ORDER BY cost_usd DESC, key;

-- name: costs_by_model
SELECT c.provider || '/' || c.model AS key, count(*) AS calls, coalesce(sum(c.cost_usd), 0) AS cost_usd,
       count(*) FILTER (WHERE c.cost_usd IS NULL) AS unpriced_calls,
       sum(c.input_tokens) AS input_tokens, sum(c.output_tokens) AS output_tokens
FROM papayya.llm_calls c
WHERE c.created_at >= %(since)s AND c.created_at < %(until)s
  AND (%(tenant_id)s::text IS NULL OR c.tenant_id = %(tenant_id)s)
GROUP BY 1 ORDER BY cost_usd DESC, key;

-- name: costs_by_agent
SELECT r.agent_name AS key, count(*) AS calls, coalesce(sum(c.cost_usd), 0) AS cost_usd,
       count(*) FILTER (WHERE c.cost_usd IS NULL) AS unpriced_calls,
       sum(c.input_tokens) AS input_tokens, sum(c.output_tokens) AS output_tokens
FROM papayya.llm_calls c JOIN papayya.runs r ON r.run_id = c.run_id
WHERE c.created_at >= %(since)s AND c.created_at < %(until)s
  AND (%(tenant_id)s::text IS NULL OR c.tenant_id = %(tenant_id)s)
GROUP BY 1 ORDER BY cost_usd DESC, key;

-- CLI reads

-- name: tenant_stats
SELECT (SELECT count(*) FROM papayya.runs r WHERE r.tenant_id = %(tenant_id)s) AS runs,
       (SELECT count(*) FROM papayya.runs r
         WHERE r.tenant_id = %(tenant_id)s AND r.replayed_from IS NOT NULL) AS replay_runs,
       (SELECT max(r.created_at) FROM papayya.runs r WHERE r.tenant_id = %(tenant_id)s) AS last_run_at,
       count(*) AS llm_calls,
       coalesce(sum(c.cost_usd), 0) AS cost_usd,
       count(*) FILTER (WHERE c.cost_usd IS NULL) AS unpriced_calls
FROM papayya.llm_calls c
WHERE c.tenant_id = %(tenant_id)s;

-- name: tenant_item_counts
-- The counting rule (docs/concepts.md, "Counting items across runs and replays"): every item a tenant
-- sent counts once, with its current outcome, which is that of the newest item of its replay lineage
-- (itself, a replay of it, a replay of that) to conclude succeeded, degraded or failed, or its own status
-- when none has. Replays are never added: `replayed` counts the items among `n` that have a replay.
-- `latest` (papayya.replay_latest, migration 0008, which every cross-run read below uses) maps each
-- replayed original to the item whose outcome counts for it; an original not in it counts as itself.
WITH latest AS MATERIALIZED (SELECT original, item_id FROM papayya.replay_latest(%(tenant_ids)s::text[]))
SELECT i.tenant_id, i.status, count(*) AS n,
       count(*) FILTER (WHERE i.item_id IN (SELECT item_id FROM latest)) AS replayed
FROM papayya.items i
WHERE i.tenant_id = ANY(%(tenant_ids)s::text[])
  AND (i.item_id IN (SELECT item_id FROM latest)
       OR (i.replayed_from IS NULL AND i.item_id NOT IN (SELECT original FROM latest)))
GROUP BY i.tenant_id, i.status;

-- name: run_list_detail
-- A page of runs, newest first (optionally of one status, after a (created_at, run_id) cursor), with
-- each run's item counts by status, calls, cost, own budget and paused reason. Counts, calls and cost
-- come from the per-run counters (migration 0009).
SELECT r.run_id, r.tenant_id, r.agent_name, r.name, r.backend, r.status, r.total_items, r.created_at,
       r.finished_at, r.budget_usd, r.paused_reason, r.replayed_from, i.counts, c.calls, c.cost_usd,
       c.unpriced_calls
FROM papayya.runs r
CROSS JOIN LATERAL (
    SELECT coalesce(jsonb_object_agg(s.status, s.n), '{}'::jsonb) AS counts
    FROM (SELECT status, sum(n) AS n FROM papayya.run_item_counts
          WHERE run_id = r.run_id AND tenant_id = r.tenant_id GROUP BY status HAVING sum(n) <> 0) s
) i
CROSS JOIN LATERAL (
    SELECT coalesce(sum(calls), 0)::bigint AS calls, coalesce(sum(cost_usd), 0) AS cost_usd,
           coalesce(sum(unpriced_calls), 0)::bigint AS unpriced_calls
    FROM papayya.run_call_counts WHERE run_id = r.run_id AND tenant_id = r.tenant_id
) c
WHERE (%(tenant_id)s::text IS NULL OR r.tenant_id = %(tenant_id)s)
  AND (%(status)s::text IS NULL OR r.status = %(status)s)
  AND (%(before_at)s::timestamptz IS NULL OR (r.created_at, r.run_id) < (%(before_at)s, %(before_id)s::uuid))
ORDER BY r.created_at DESC, r.run_id DESC
LIMIT %(limit)s;

-- name: item_id_by_key
SELECT item_id FROM papayya.items
WHERE run_id = %(run_id)s AND tenant_id = %(tenant_id)s AND key = %(key)s;

-- budgets

-- name: budget_accounts_ensure
INSERT INTO papayya.budget_accounts (scope, owner, period, tenant_id, period_start, spent_usd)
VALUES ('tenant', %(tenant_id)s, %(tenant_period)s, %(tenant_id)s, %(period_start)s,
        (SELECT coalesce(sum(c.cost_usd), 0) FROM papayya.llm_calls c
          WHERE c.tenant_id = %(tenant_id)s
            AND c.created_at >= coalesce(%(period_start)s::timestamptz, '-infinity'))
        + (SELECT coalesce(sum(b.charged_usd), 0) FROM papayya.batch_requests b
            WHERE b.tenant_id = %(tenant_id)s AND b.status IN ('pending', 'submitted')
              AND b.created_at >= coalesce(%(period_start)s::timestamptz, '-infinity'))),
       ('run', %(run_key)s, 'total', %(tenant_id)s, NULL,
        (SELECT coalesce(sum(c.cost_usd), 0) FROM papayya.llm_calls c
          WHERE c.run_id = %(run_id)s AND c.tenant_id = %(tenant_id)s)
        + (SELECT coalesce(sum(b.charged_usd), 0) FROM papayya.batch_requests b
            WHERE b.run_id = %(run_id)s AND b.tenant_id = %(tenant_id)s AND b.status IN ('pending', 'submitted')))
ON CONFLICT (scope, owner, period) DO NOTHING;

-- name: budget_reserve
-- All or nothing over the tenant's and the run's account; refused when either budget has no room or
-- the run is not running (paused by a person, or by a budget on another worker).
WITH acct AS (
    SELECT a.scope, a.owner, a.period, a.spent_usd, a.reserved_usd,
           CASE a.scope
               WHEN 'tenant' THEN (SELECT t.budget_usd FROM papayya.tenants t WHERE t.tenant_id = a.owner)
               ELSE (SELECT r.budget_usd FROM papayya.runs r WHERE r.run_id = %(run_id)s)
           END AS limit_usd
    FROM papayya.budget_accounts a
    WHERE (a.scope, a.owner, a.period) IN (('tenant', %(tenant_id)s, %(tenant_period)s),
                                           ('run', %(run_key)s, 'total'))
    ORDER BY a.scope, a.owner, a.period  -- every statement locks accounts in this order: no deadlocks
    FOR UPDATE
), verdict AS (
    SELECT coalesce(bool_and(acct.limit_usd IS NULL
                             OR (%(amount)s::numeric IS NOT NULL
                                 AND acct.spent_usd + acct.reserved_usd + %(amount)s <= acct.limit_usd)),
                    true) AS fits,
           (SELECT r.status FROM papayya.runs r WHERE r.run_id = %(run_id)s AND r.tenant_id = %(tenant_id)s)
               AS run_status
    FROM acct
), reserved AS (
    UPDATE papayya.budget_accounts a
    SET reserved_usd = a.reserved_usd + coalesce(%(amount)s::numeric, 0), updated_at = now()
    FROM verdict v
    WHERE v.fits AND v.run_status = 'running'
      AND (a.scope, a.owner, a.period) IN (('tenant', %(tenant_id)s, %(tenant_period)s),
                                           ('run', %(run_key)s, 'total'))
    RETURNING a.scope
)
SELECT v.fits, v.run_status, (SELECT count(*) FROM reserved) AS reserved,
       (SELECT r.gen FROM papayya.runs r WHERE r.run_id = %(run_id)s AND r.tenant_id = %(tenant_id)s)
           AS run_gen,
       (SELECT t.gen FROM papayya.tenants t WHERE t.tenant_id = %(tenant_id)s) AS tenant_gen,
       (SELECT jsonb_agg(jsonb_build_object('scope', acct.scope, 'period', acct.period,
                                            'spent', acct.spent_usd, 'reserved', acct.reserved_usd,
                                            'limit', acct.limit_usd))
          FROM acct) AS accounts
FROM verdict v;

-- name: budget_settle
WITH locked AS (
    SELECT scope, owner, period FROM papayya.budget_accounts
    WHERE (scope, owner, period) IN (('tenant', %(tenant_id)s, %(tenant_period)s), ('run', %(run_key)s, 'total'))
    ORDER BY scope, owner, period
    FOR UPDATE
)
UPDATE papayya.budget_accounts a
SET reserved_usd = greatest(0, a.reserved_usd - %(reserved)s), spent_usd = a.spent_usd + %(actual)s,
    updated_at = now()
FROM locked l
WHERE (a.scope, a.owner, a.period) = (l.scope, l.owner, l.period);

-- name: budget_reconcile
-- Accounts recomputed from the ledger (the truth) and leases dropped, where nothing of the account runs
-- (a running worker holds leases and spend not yet written to the account; its account is left alone).
-- A call deferred to a provider batch counts its charge (its worst case) until its answer is recorded.
UPDATE papayya.budget_accounts a
SET spent_usd = CASE a.scope
        WHEN 'tenant' THEN (SELECT coalesce(sum(c.cost_usd), 0) FROM papayya.llm_calls c
                             WHERE c.tenant_id = a.owner
                               AND c.created_at >= coalesce(a.period_start, '-infinity'))
                           + (SELECT coalesce(sum(b.charged_usd), 0) FROM papayya.batch_requests b
                               WHERE b.tenant_id = a.owner AND b.status IN ('pending', 'submitted')
                                 AND b.created_at >= coalesce(a.period_start, '-infinity'))
        ELSE (SELECT coalesce(sum(c.cost_usd), 0) FROM papayya.llm_calls c
               WHERE c.run_id::text = a.owner AND c.tenant_id = a.tenant_id)
             + (SELECT coalesce(sum(b.charged_usd), 0) FROM papayya.batch_requests b
                 WHERE b.run_id::text = a.owner AND b.tenant_id = a.tenant_id
                   AND b.status IN ('pending', 'submitted'))
    END,
    reserved_usd = 0,
    updated_at = now()
FROM (SELECT scope, owner, period FROM papayya.budget_accounts WHERE tenant_id = %(tenant_id)s
      ORDER BY scope, owner, period FOR UPDATE) l
WHERE (a.scope, a.owner, a.period) = (l.scope, l.owner, l.period)
  AND NOT EXISTS (SELECT 1 FROM papayya.items i
                  WHERE i.tenant_id = a.tenant_id AND i.status = 'running'
                    AND (a.scope = 'tenant' OR i.run_id::text = a.owner));

-- name: budget_view
SELECT a.scope, a.period, a.spent_usd, a.reserved_usd,
       CASE a.scope
           WHEN 'tenant' THEN (SELECT t.budget_usd FROM papayya.tenants t WHERE t.tenant_id = a.owner)
           ELSE (SELECT r.budget_usd FROM papayya.runs r WHERE r.run_id::text = a.owner)
       END AS limit_usd
FROM papayya.budget_accounts a
WHERE (a.scope, a.owner, a.period) IN (('tenant', %(tenant_id)s, %(tenant_period)s),
                                       ('run', %(run_key)s, 'total'))
ORDER BY a.scope DESC;

-- Control changes (budgets, caps, pause, resume) bump the generation of the tenant or run they change,
-- in the same statement, and announce it on the papayya_control channel (delivered at commit):
-- 'run GEN STATUS RUN_ID' or 'tenant GEN TENANT_ID'. Workers drop whatever they cached under an older
-- generation (papayya.runstate).

-- name: tenant_budget_set
WITH t AS (
    UPDATE papayya.tenants
    SET budget_usd = %(budget_usd)s, budget_period = coalesce(%(budget_period)s, budget_period),
        updated_at = now(), gen = gen + 1
    WHERE tenant_id = %(tenant_id)s
    RETURNING tenant_id, budget_usd, budget_period, gen
)
SELECT t.budget_usd, t.budget_period, t.gen,
       pg_notify('papayya_control', 'tenant ' || t.gen || ' ' || t.tenant_id) AS notified
FROM t;

-- name: run_budget_set
WITH r AS (
    UPDATE papayya.runs SET budget_usd = %(budget_usd)s, gen = gen + 1
    WHERE run_id = %(run_id)s AND tenant_id = %(tenant_id)s
    RETURNING run_id, status, gen
)
SELECT r.run_id, r.gen, pg_notify('papayya_control', 'run ' || r.gen || ' ' || r.status || ' ' || r.run_id)
           AS notified
FROM r;

-- name: runs_pause
-- Pause one run (run_id given) or every running run of a tenant (run_id NULL).
WITH r AS (
    UPDATE papayya.runs
    SET status = 'paused', paused_reason = %(reason)s, gen = gen + 1
    WHERE tenant_id = %(tenant_id)s AND status = 'running'
      AND (%(run_id)s::uuid IS NULL OR run_id = %(run_id)s)
    RETURNING run_id, gen
)
SELECT r.run_id, r.gen, pg_notify('papayya_control', 'run ' || r.gen || ' paused ' || r.run_id) AS notified
FROM r;

-- name: run_states
-- The control state of runs and their tenants, as a worker's once-a-second check reads it.
SELECT r.run_id, r.status, r.gen, r.tenant_id, t.gen AS tenant_gen
FROM papayya.runs r JOIN papayya.tenants t USING (tenant_id)
WHERE r.run_id = ANY(%(run_ids)s::uuid[]);

-- name: run_resume
WITH run AS (
    UPDATE papayya.runs SET status = 'running', paused_reason = NULL, finished_at = NULL, gen = gen + 1
    WHERE run_id = %(run_id)s AND tenant_id = %(tenant_id)s AND status IN ('paused', 'running')
    RETURNING run_id, gen
), note AS (
    SELECT pg_notify('papayya_control', 'run ' || run.gen || ' running ' || run.run_id) FROM run
), requeued AS (
    UPDATE papayya.items i
    SET status = 'queued', lease_token = NULL, lease_expires_at = NULL, updated_at = now(),
        attempts = greatest(i.attempts, coalesce((SELECT max(a.number) FROM papayya.attempts a
                                                  WHERE a.item_id = i.item_id), 0))
    FROM run WHERE i.run_id = run.run_id AND i.tenant_id = %(tenant_id)s
      AND (i.status = 'paused' OR (i.status = 'running' AND i.lease_expires_at < now()))
    RETURNING i.item_id
), stalled AS (
    -- attempts whose process died mid-item (their lease expired): kept, marked stalled
    UPDATE papayya.attempts a SET status = 'stalled', finished_at = now()
    FROM requeued r WHERE a.item_id = r.item_id AND a.status = 'running'
    RETURNING a.attempt_id
)
SELECT (SELECT count(*) FROM run) AS resumed, (SELECT count(*) FROM requeued) AS requeued,
       (SELECT count(*) FROM stalled) AS stalled, (SELECT count(*) FROM note) AS notified,
       (SELECT gen FROM run) AS gen;

-- name: run_live_leases
SELECT count(*) AS n FROM papayya.items
WHERE run_id = %(run_id)s AND tenant_id = %(tenant_id)s AND status = 'running' AND lease_expires_at >= now();

-- name: run_pending_items
SELECT item_id, key FROM papayya.items
WHERE run_id = %(run_id)s AND tenant_id = %(tenant_id)s AND status = 'queued'
ORDER BY key;

-- name: runs_paused_of_tenant
SELECT run_id FROM papayya.runs WHERE tenant_id = %(tenant_id)s AND status = 'paused' ORDER BY created_at;

-- name: tenant_spend_since
SELECT coalesce(sum(cost_usd), 0) AS spent
FROM papayya.llm_calls
WHERE tenant_id = %(tenant_id)s AND created_at >= coalesce(%(since)s::timestamptz, '-infinity');

-- rate limits

-- name: rate_limit_upsert
-- Set a key's limits (replacing both); its bucket keeps what is left, capped by the new limits.
INSERT INTO papayya.rate_limits (provider, model, tenant_id, requests_per_minute, tokens_per_minute)
VALUES (%(provider)s, %(model)s, %(tenant_id)s, %(requests_per_minute)s, %(tokens_per_minute)s)
ON CONFLICT (provider, model, tenant_id) DO UPDATE
SET requests_per_minute = excluded.requests_per_minute, tokens_per_minute = excluded.tokens_per_minute,
    updated_at = now()
RETURNING provider, model, tenant_id, requests_per_minute, tokens_per_minute, created_at, updated_at;

-- name: rate_limit_delete
DELETE FROM papayya.rate_limits
WHERE provider = %(provider)s AND model = %(model)s AND tenant_id = %(tenant_id)s;

-- name: rate_limit_list
-- Every limit with what its bucket holds now (refilled at its per-minute rate over %(period)s seconds).
SELECT l.provider, l.model, l.tenant_id, l.requests_per_minute, l.tokens_per_minute, l.created_at,
       l.updated_at,
       floor(least(l.requests_per_minute::float8,
                   coalesce(l.requests_left, l.requests_per_minute)
                   + l.requests_per_minute * e.secs / %(period)s::float8))::bigint AS requests_available,
       floor(least(l.tokens_per_minute::float8,
                   coalesce(l.tokens_left, l.tokens_per_minute)
                   + l.tokens_per_minute * e.secs / %(period)s::float8))::bigint AS tokens_available
FROM papayya.rate_limits l
CROSS JOIN LATERAL (SELECT greatest(0, extract(epoch FROM now() - l.refilled_at))::float8 AS secs) e
ORDER BY l.provider, l.model, l.tenant_id;

-- name: rate_snapshot
-- What a RateLimiter caches for a second: which keys have limits, and the closures in force with
-- the seconds they have left on the database clock.
SELECT provider, model, tenant_id, NULL::float8 AS closed_for
FROM papayya.rate_limits
UNION ALL
SELECT provider, model, NULL, extract(epoch FROM closed_until - now())::float8
FROM papayya.rate_closures
WHERE closed_until > now();

-- name: rate_take
-- One request of %(tokens)s tokens against every limit matching (provider, model, tenant), all or
-- nothing, in one statement: the matching rows are locked in key order (FOR UPDATE returns their
-- latest committed state), refilled to now, and taken from only when every one of them has room and
-- no closure is in force. Otherwise nothing changes and wait_seconds says when to ask again.
WITH closure AS (
    SELECT max(extract(epoch FROM c.closed_until - now()))::float8 AS closed_for
    FROM papayya.rate_closures c
    WHERE c.provider = %(provider)s AND c.model IN (%(model)s, '*') AND c.closed_until > now()
), locked AS MATERIALIZED (
    SELECT l.provider, l.model, l.tenant_id, l.requests_per_minute::float8 AS rpm,
           l.tokens_per_minute::float8 AS tpm, l.requests_left, l.tokens_left, l.refilled_at
    FROM papayya.rate_limits l
    WHERE l.provider = %(provider)s AND l.model IN (%(model)s, '*') AND l.tenant_id IN (%(tenant_id)s, '*')
    ORDER BY l.provider, l.model, l.tenant_id
    FOR UPDATE
), level AS MATERIALIZED (
    SELECT k.provider, k.model, k.tenant_id, k.rpm, k.tpm, greatest(k.refilled_at, now()) AS refilled_at,
           least(k.rpm, coalesce(k.requests_left, k.rpm) + k.rpm * e.secs / %(period)s::float8)
               AS requests_now,
           least(k.tpm, coalesce(k.tokens_left, k.tpm) + k.tpm * e.secs / %(period)s::float8) AS tokens_now
    FROM locked k
    CROSS JOIN LATERAL (SELECT greatest(0, extract(epoch FROM now() - k.refilled_at))::float8 AS secs) e
), verdict AS MATERIALIZED (
    SELECT coalesce(max(greatest(
               CASE WHEN v.rpm IS NULL THEN 0 ELSE (1 - v.requests_now) * %(period)s::float8 / v.rpm END,
               CASE WHEN v.tpm IS NULL THEN 0
                    ELSE (least(%(tokens)s::float8, v.tpm) - v.tokens_now) * %(period)s::float8 / v.tpm END
           )), 0) AS wait_limits,
           (SELECT closed_for FROM closure) AS closed_for,
           count(*) AS keys
    FROM level v
), taken AS (
    UPDATE papayya.rate_limits l
    SET requests_left = v.requests_now - 1, tokens_left = v.tokens_now - %(tokens)s::float8,
        refilled_at = v.refilled_at
    FROM level v, verdict d
    WHERE l.provider = v.provider AND l.model = v.model AND l.tenant_id = v.tenant_id
      AND d.wait_limits <= 1e-9 AND d.closed_for IS NULL
    RETURNING l.provider
)
SELECT d.wait_limits <= 1e-9 AND d.closed_for IS NULL AS ok,
       greatest(d.wait_limits, coalesce(d.closed_for, 0)) AS wait_seconds,
       d.closed_for, d.keys, (SELECT count(*) FROM taken) AS taken
FROM verdict d;

-- name: rate_close
-- A 429 with Retry-After: close provider/model until now() + %(seconds)s, never earlier than it was.
INSERT INTO papayya.rate_closures (provider, model, closed_until)
VALUES (%(provider)s, %(model)s, now() + make_interval(secs => %(seconds)s::float8))
ON CONFLICT (provider, model) DO UPDATE
SET closed_until = greatest(papayya.rate_closures.closed_until, excluded.closed_until), updated_at = now()
RETURNING provider, model, closed_until,
          greatest(0, extract(epoch FROM closed_until - now()))::float8 AS closed_for;

-- name: rate_closures_open
SELECT provider, model, closed_until,
       extract(epoch FROM closed_until - now())::float8 AS closed_for
FROM papayya.rate_closures
WHERE closed_until > now()
ORDER BY provider, model;

-- name: rate_settle
-- After a call: give back to (or take more from) every matching token bucket the difference between
-- the tokens estimated at rate_take and those used. Rows locked in rate_take's order (no deadlock).
WITH locked AS MATERIALIZED (
    SELECT l.provider, l.model, l.tenant_id
    FROM papayya.rate_limits l
    WHERE l.provider = %(provider)s AND l.model IN (%(model)s, '*') AND l.tenant_id IN (%(tenant_id)s, '*')
      AND l.tokens_per_minute IS NOT NULL
    ORDER BY l.provider, l.model, l.tenant_id
    FOR UPDATE
)
UPDATE papayya.rate_limits l
SET tokens_left = least(l.tokens_per_minute::float8,
                        coalesce(l.tokens_left, l.tokens_per_minute) + %(delta)s::float8)
FROM locked k
WHERE l.provider = k.provider AND l.model = k.model AND l.tenant_id = k.tenant_id;

-- CLI budget reads

-- name: tenant_budgets
-- Each tenant's budget with what it spent (the ledger) and what running workers hold reserved (its
-- account) in its current period. The caller names the current month and day (keys and UTC starts),
-- so periods are cut in one place (budgets.period_of).
SELECT t.tenant_id, t.budget_usd, t.budget_period, p.period_key,
       (SELECT coalesce(sum(c.cost_usd), 0) FROM papayya.llm_calls c
         WHERE c.tenant_id = t.tenant_id
           AND c.created_at >= coalesce(p.period_start, '-infinity')) AS spent_usd,
       coalesce((SELECT a.reserved_usd FROM papayya.budget_accounts a
                  WHERE a.scope = 'tenant' AND a.owner = t.tenant_id AND a.period = p.period_key), 0)
           AS reserved_usd
FROM papayya.tenants t
CROSS JOIN LATERAL (
    SELECT CASE t.budget_period WHEN 'month' THEN %(month_key)s::text
                                WHEN 'day' THEN %(day_key)s::text ELSE 'total' END AS period_key,
           CASE t.budget_period WHEN 'month' THEN %(month_start)s::timestamptz
                                WHEN 'day' THEN %(day_start)s::timestamptz END AS period_start
) p
WHERE t.tenant_id = ANY(%(tenant_ids)s::text[]);

-- name: run_budgets
-- A run's own budget and why it is paused, for runs listed by run_list_detail.
SELECT run_id, budget_usd, paused_reason
FROM papayya.runs
WHERE run_id = ANY(%(run_ids)s::uuid[]);

-- replay and clusters

-- name: replay_create
-- A new run holding exactly the chosen items of the source run, from their recorded input snapshots,
-- each linked to the item it replays. Nothing of the source run changes.
WITH source AS MATERIALIZED (
    SELECT i.item_id, gen_random_uuid() AS new_id, i.key, coalesce(i.input, (SELECT n.input FROM papayya.item_inputs n WHERE n.item_id = i.item_id AND n.tenant_id = i.tenant_id)) AS input
    FROM papayya.items i
    WHERE i.run_id = %(source_run_id)s AND i.tenant_id = %(tenant_id)s
      AND (%(item_ids)s::uuid[] IS NULL OR i.item_id = ANY(%(item_ids)s::uuid[]))
      AND (%(keys)s::text[] IS NULL OR i.key = ANY(%(keys)s::text[]))
      AND (%(status)s::text IS NULL OR i.status = %(status)s)
      AND (NOT %(not_succeeded)s OR i.status IN ('degraded', 'failed', 'paused', 'stalled', 'cancelled'))
      AND (%(fingerprint)s::text IS NULL OR i.fingerprint = %(fingerprint)s)
), run AS (
    INSERT INTO papayya.runs (run_id, tenant_id, agent_name, name, backend, total_items, options, replayed_from,
                              budget_usd, entrypoint, from_journal, replay_slice)
    SELECT %(run_id)s, r.tenant_id, r.agent_name, %(name)s, coalesce(%(backend)s, r.backend),
           (SELECT count(*) FROM source),
           CASE WHEN %(llm_mode)s::text IS NULL THEN r.options
                ELSE r.options || jsonb_build_object('llm_mode', %(llm_mode)s::text) END,
           r.run_id, NULL, r.entrypoint, %(from_journal)s,
           %(slice)s
    FROM papayya.runs r
    WHERE r.run_id = %(source_run_id)s AND r.tenant_id = %(tenant_id)s AND EXISTS (SELECT 1 FROM source)
    RETURNING run_id
), created AS (
    INSERT INTO papayya.items (item_id, run_id, tenant_id, key, max_attempts, replayed_from)
    SELECT s.new_id, run.run_id, %(tenant_id)s, s.key,
           (SELECT max_attempts FROM papayya.items o WHERE o.item_id = s.item_id), s.item_id
    FROM source s, run
    RETURNING item_id
), inputs AS (
    INSERT INTO papayya.item_inputs (item_id, tenant_id, input)
    SELECT s.new_id, %(tenant_id)s, s.input FROM source s JOIN created c ON c.item_id = s.new_id
)
SELECT (SELECT count(*) FROM run) AS runs, (SELECT count(*) FROM created) AS items;

-- name: replay_sources_without_journal
SELECT i.key FROM papayya.items i
WHERE i.run_id = %(run_id)s AND i.tenant_id = %(tenant_id)s
  AND NOT EXISTS (SELECT 1 FROM papayya.steps s WHERE s.item_id = i.replayed_from)
ORDER BY i.key
LIMIT 5;

-- name: clusters
-- Degraded and failed items grouped by fingerprint, over a run, a tenant, an agent and a time window.
SELECT i.fingerprint AS cluster, i.status AS outcome, min(i.cluster_label) AS label,
       count(*) AS items, count(DISTINCT i.tenant_id) AS tenants,
       min(i.finished_at) AS first_seen, max(i.finished_at) AS last_seen,
       coalesce(sum(i.cost_usd), 0) AS cost_usd,
       (array_agg(i.item_id ORDER BY i.key))[1:3] AS sample_item_ids,
       (array_agg(i.key ORDER BY i.key))[1:3] AS sample_keys
FROM papayya.items i
WHERE i.fingerprint IS NOT NULL AND i.status IN ('degraded', 'failed')
  AND (%(run_id)s::uuid IS NULL OR i.run_id = %(run_id)s)
  AND (%(tenant_id)s::text IS NULL OR i.tenant_id = %(tenant_id)s)
  AND (%(agent)s::text IS NULL
       OR i.run_id IN (SELECT r.run_id FROM papayya.runs r WHERE r.agent_name = %(agent)s))
  AND (%(since)s::timestamptz IS NULL OR i.finished_at >= %(since)s)
  AND (%(until)s::timestamptz IS NULL OR i.finished_at < %(until)s)
GROUP BY i.fingerprint, i.status
ORDER BY items DESC, cluster
LIMIT %(limit)s;

-- name: clusters_across
-- `clusters` over every run (of a tenant, an agent, a time window), by the counting rule (see
-- tenant_item_counts): each item a tenant sent is in at most one cluster, that of its current outcome,
-- so an item degraded in its run and in two replays is one item, not three.
WITH latest AS MATERIALIZED (SELECT original, item_id FROM papayya.replay_latest(CASE WHEN %(tenant_id)s::text IS NULL THEN NULL ELSE ARRAY[%(tenant_id)s::text] END))
SELECT i.fingerprint AS cluster, i.status AS outcome, min(i.cluster_label) AS label,
       count(*) AS items, count(DISTINCT i.tenant_id) AS tenants,
       min(i.finished_at) AS first_seen, max(i.finished_at) AS last_seen,
       coalesce(sum(i.cost_usd), 0) AS cost_usd,
       (array_agg(i.item_id ORDER BY i.key, i.item_id))[1:3] AS sample_item_ids,
       (array_agg(i.key ORDER BY i.key, i.item_id))[1:3] AS sample_keys
FROM papayya.items i
WHERE i.fingerprint IS NOT NULL AND i.status IN ('degraded', 'failed')
  AND (%(tenant_id)s::text IS NULL OR i.tenant_id = %(tenant_id)s)
  AND (i.item_id IN (SELECT item_id FROM latest)
       OR (i.replayed_from IS NULL AND i.item_id NOT IN (SELECT original FROM latest)))
  AND (%(agent)s::text IS NULL
       OR i.run_id IN (SELECT r.run_id FROM papayya.runs r WHERE r.agent_name = %(agent)s))
  AND (%(since)s::timestamptz IS NULL OR i.finished_at >= %(since)s)
  AND (%(until)s::timestamptz IS NULL OR i.finished_at < %(until)s)
GROUP BY i.fingerprint, i.status
ORDER BY items DESC, cluster
LIMIT %(limit)s;

-- name: item_lineage
-- Every item linked to this one by replays (its originals and its replays), oldest first.
WITH RECURSIVE up AS (
    SELECT i.item_id, i.replayed_from FROM papayya.items i
    WHERE i.item_id = %(item_id)s AND i.tenant_id = %(tenant_id)s
    UNION
    SELECT p.item_id, p.replayed_from FROM papayya.items p JOIN up ON p.item_id = up.replayed_from
), root AS (
    SELECT item_id FROM up WHERE replayed_from IS NULL
), down AS (
    SELECT i.item_id FROM papayya.items i JOIN root ON i.item_id = root.item_id
    UNION
    SELECT c.item_id FROM papayya.items c JOIN down ON c.replayed_from = down.item_id
)
SELECT i.item_id, i.run_id, i.key, i.status, i.replayed_from, i.created_at
FROM papayya.items i JOIN down USING (item_id)
WHERE i.tenant_id = %(tenant_id)s
ORDER BY i.created_at;

-- name: run_lineage
-- For a replay run: what it re-drove and how those items did then and now. For any run: its replays.
SELECT r.run_id, r.replayed_from, r.replay_slice, r.from_journal, r.created_at, r.status,
       (SELECT coalesce(jsonb_object_agg(x.before || '->' || x.after, x.n), '{}'::jsonb)
          FROM (SELECT o.status AS before, i.status AS after, count(*) AS n
                FROM papayya.items i JOIN papayya.items o ON o.item_id = i.replayed_from
                WHERE i.run_id = r.run_id AND i.tenant_id = r.tenant_id
                GROUP BY 1, 2) x) AS transitions
FROM papayya.runs r
WHERE r.tenant_id = %(tenant_id)s AND (r.run_id = %(run_id)s OR r.replayed_from = %(run_id)s)
ORDER BY r.created_at;


-- ids as people give them back

-- name: runs_by_prefix
-- Runs whose id starts with a prefix a person typed (the short ids the dashboard prints): every id
-- from %(lo)s (the prefix padded with 0s) to %(hi)s (padded with fs).
SELECT r.run_id, r.tenant_id, r.agent_name, r.created_at
FROM papayya.runs r
WHERE r.run_id BETWEEN %(lo)s AND %(hi)s
  AND (%(tenant_id)s::text IS NULL OR r.tenant_id = %(tenant_id)s)
ORDER BY r.created_at, r.run_id
LIMIT 20;

-- name: items_by_ref
-- Items a person's text may name: the item with that key (the user's own id; in a run, when given),
-- or whose item id starts with a prefix (%(lo)s..%(hi)s, NULL when the text cannot be one).
SELECT i.item_id, i.run_id, i.tenant_id, i.key, i.status, i.replayed_from, i.created_at, i.finished_at,
       i.key = %(key)s AS by_key
FROM papayya.items i
WHERE (%(tenant_id)s::text IS NULL OR i.tenant_id = %(tenant_id)s)
  AND (%(run_id)s::uuid IS NULL OR i.run_id = %(run_id)s)
  AND (i.key = %(key)s OR i.item_id BETWEEN %(lo)s AND %(hi)s)
ORDER BY i.created_at, i.item_id
LIMIT 200;

-- cross-run reads and replays, by the counting rule (see tenant_item_counts)

-- name: items_across
-- A tenant's items across runs, each once as its current item (replays not added), in key order;
-- `replayed`: it stands for an item that has replays. Since: its outcome came then or later.
WITH latest AS MATERIALIZED (SELECT original, item_id FROM papayya.replay_latest(CASE WHEN %(tenant_id)s::text IS NULL THEN NULL ELSE ARRAY[%(tenant_id)s::text] END))
SELECT i.item_id, i.run_id, i.tenant_id, i.key, i.status, i.attempts, i.reasons,
       i.error ->> 'type' AS error_type, i.fingerprint, i.cost_usd, i.cost_unknown, i.updated_at,
       i.finished_at, i.item_id IN (SELECT item_id FROM latest) AS replayed
FROM papayya.items i
WHERE i.tenant_id = %(tenant_id)s
  AND (i.item_id IN (SELECT item_id FROM latest)
       OR (i.replayed_from IS NULL AND i.item_id NOT IN (SELECT original FROM latest)))
  AND (%(status)s::text IS NULL OR i.status = %(status)s)
  AND (%(since)s::timestamptz IS NULL OR coalesce(i.finished_at, i.updated_at) >= %(since)s)
  AND (%(after)s::text IS NULL OR i.key > %(after)s)
ORDER BY i.key, i.created_at
LIMIT %(limit)s;

-- name: replay_slice_across
-- What `replay --tenant T` re-drives: the tenant's current items (one per item it sent) with that
-- outcome and/or in that cluster, with the run and agent each belongs to.
WITH latest AS MATERIALIZED (SELECT original, item_id FROM papayya.replay_latest(CASE WHEN %(tenant_id)s::text IS NULL THEN NULL ELSE ARRAY[%(tenant_id)s::text] END))
SELECT i.item_id, i.key, i.run_id, r.agent_name, r.created_at AS run_created_at
FROM papayya.items i JOIN papayya.runs r ON r.run_id = i.run_id AND r.tenant_id = i.tenant_id
WHERE i.tenant_id = %(tenant_id)s
  AND (i.item_id IN (SELECT item_id FROM latest)
       OR (i.replayed_from IS NULL AND i.item_id NOT IN (SELECT original FROM latest)))
  AND (%(status)s::text IS NULL OR i.status = %(status)s)
  AND (NOT %(not_succeeded)s OR i.status IN ('degraded', 'failed', 'paused', 'stalled', 'cancelled'))
  AND (%(fingerprint)s::text IS NULL OR i.fingerprint = %(fingerprint)s)
ORDER BY i.key;

-- name: replay_create_across
-- A new run holding exactly the given items of a tenant (from any of its runs), from their recorded
-- input snapshots, each linked to the item it replays; its options, agent and code are those of
-- %(source_run_id)s (the newest run they come from). Nothing of the source runs changes.
WITH source AS MATERIALIZED (
    SELECT i.item_id, gen_random_uuid() AS new_id, i.key, coalesce(i.input, (SELECT n.input FROM papayya.item_inputs n WHERE n.item_id = i.item_id AND n.tenant_id = i.tenant_id)) AS input,
           i.max_attempts
    FROM papayya.items i
    WHERE i.tenant_id = %(tenant_id)s AND i.item_id = ANY(%(item_ids)s::uuid[])
), run AS (
    INSERT INTO papayya.runs (run_id, tenant_id, agent_name, name, backend, total_items, options, replayed_from,
                              budget_usd, entrypoint, from_journal, replay_slice)
    SELECT %(run_id)s, r.tenant_id, r.agent_name, %(name)s, coalesce(%(backend)s, r.backend),
           (SELECT count(*) FROM source),
           CASE WHEN %(llm_mode)s::text IS NULL THEN r.options
                ELSE r.options || jsonb_build_object('llm_mode', %(llm_mode)s::text) END,
           r.run_id, NULL, r.entrypoint, %(from_journal)s,
           %(slice)s
    FROM papayya.runs r
    WHERE r.run_id = %(source_run_id)s AND r.tenant_id = %(tenant_id)s AND EXISTS (SELECT 1 FROM source)
    RETURNING run_id
), created AS (
    INSERT INTO papayya.items (item_id, run_id, tenant_id, key, max_attempts, replayed_from)
    SELECT s.new_id, run.run_id, %(tenant_id)s, s.key, s.max_attempts, s.item_id
    FROM source s, run
    RETURNING item_id
), inputs AS (
    INSERT INTO papayya.item_inputs (item_id, tenant_id, input)
    SELECT s.new_id, %(tenant_id)s, s.input FROM source s JOIN created c ON c.item_id = s.new_id
)
SELECT (SELECT count(*) FROM run) AS runs, (SELECT count(*) FROM created) AS items;

-- name: costs_by_pair
-- LLM cost by two of tenant, run, model and agent at once (`costs --by tenant,model`).
SELECT CASE %(first)s WHEN 'tenant' THEN c.tenant_id WHEN 'run' THEN c.run_id::text
                      WHEN 'model' THEN c.provider || '/' || c.model ELSE r.agent_name END AS key1,
       CASE %(second)s WHEN 'tenant' THEN c.tenant_id WHEN 'run' THEN c.run_id::text
                       WHEN 'model' THEN c.provider || '/' || c.model ELSE r.agent_name END AS key2,
       count(*) AS calls, coalesce(sum(c.cost_usd), 0) AS cost_usd,
       count(*) FILTER (WHERE c.cost_usd IS NULL) AS unpriced_calls,
       sum(c.input_tokens) AS input_tokens, sum(c.output_tokens) AS output_tokens
FROM papayya.llm_calls c JOIN papayya.runs r ON r.run_id = c.run_id
WHERE c.created_at >= %(since)s AND c.created_at < %(until)s
  AND (%(tenant_id)s::text IS NULL OR c.tenant_id = %(tenant_id)s)
GROUP BY 1, 2 ORDER BY key1, cost_usd DESC, key2;

-- name: counts_compact
-- Fold the per-run counter shards of PostgreSQL backends that are gone into one (migration 0009).
SELECT papayya.counts_compact() AS folded;
