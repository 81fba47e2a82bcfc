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
SELECT tenant_id, config, created_at, updated_at FROM papayya.tenants WHERE tenant_id = %(tenant_id)s;

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
INSERT INTO papayya.runs (run_id, tenant_id, agent_name, name, backend, total_items, options, replayed_from)
VALUES (%(run_id)s, %(tenant_id)s, %(agent_name)s, %(name)s, %(backend)s, %(total_items)s, %(options)s,
        %(replayed_from)s);

-- name: items_insert
INSERT INTO papayya.items (item_id, run_id, tenant_id, key, input, max_attempts)
SELECT u.item_id, %(run_id)s, %(tenant_id)s, u.key, u.input, %(max_attempts)s
FROM unnest(%(item_ids)s::uuid[], %(keys)s::text[], %(inputs)s::jsonb[]) AS u(item_id, key, input);

-- name: attempt_begin
WITH claimed AS (
    UPDATE papayya.items
    SET status = 'running', attempts = attempts + 1,
        lease_token = nextval('papayya.lease_token_seq'),
        lease_expires_at = now() + make_interval(secs => %(lease_seconds)s),
        updated_at = now()
    WHERE item_id = %(item_id)s AND tenant_id = %(tenant_id)s AND status = 'queued'
    RETURNING item_id, run_id, tenant_id, attempts, lease_token, input
), attempt AS (
    INSERT INTO papayya.attempts (attempt_id, item_id, run_id, tenant_id, number, backend, worker, lease_token)
    SELECT %(attempt_id)s, item_id, run_id, tenant_id, attempts, %(backend)s, %(worker)s, lease_token
    FROM claimed
    RETURNING attempt_id
)
SELECT c.attempts, c.lease_token, c.input,
       (SELECT coalesce(jsonb_object_agg(s.step_key, s.result), '{}'::jsonb)
          FROM papayya.steps s WHERE s.item_id = c.item_id) AS journal,
       (SELECT count(*) FROM attempt) AS inserted
FROM claimed c;

-- name: step_record
INSERT INTO papayya.steps (item_id, step_key, tenant_id, attempt_id, kind, result)
VALUES (%(item_id)s, %(step_key)s, %(tenant_id)s, %(attempt_id)s, %(kind)s, %(result)s)
ON CONFLICT (item_id, step_key) DO NOTHING;

-- name: llm_call_record
-- The ledger row and, for a journaled call (%(journal)s), its journal step: one round trip.
WITH journal AS (
    INSERT INTO papayya.steps (item_id, step_key, tenant_id, attempt_id, kind, result)
    SELECT %(item_id)s, %(step_key)s, %(tenant_id)s, %(attempt_id)s, 'llm', %(result)s
    WHERE %(journal)s
    ON CONFLICT (item_id, step_key) DO NOTHING
)
INSERT INTO papayya.llm_calls
    (tenant_id, run_id, item_id, attempt_id, step_key, provider, model, input_tokens, output_tokens,
     cache_read_tokens, cache_write_tokens, stop_reason, latency_ms, cost_usd, price_source,
     idempotency_key)
VALUES (%(tenant_id)s, %(run_id)s, %(item_id)s, %(attempt_id)s, %(step_key)s, %(provider)s, %(model)s,
        %(input_tokens)s, %(output_tokens)s, %(cache_read_tokens)s, %(cache_write_tokens)s,
        %(stop_reason)s, %(latency_ms)s, %(cost_usd)s, %(price_source)s, %(idempotency_key)s);

-- name: attempt_finish
WITH cost AS (
    SELECT coalesce(sum(cost_usd) FILTER (WHERE attempt_id = %(attempt_id)s), 0) AS attempt_usd,
           coalesce(bool_or(cost_usd IS NULL) FILTER (WHERE attempt_id = %(attempt_id)s), false)
               AS attempt_unknown,
           coalesce(sum(cost_usd), 0) AS item_usd,
           coalesce(bool_or(cost_usd IS NULL), false) AS item_unknown
    FROM papayya.llm_calls WHERE item_id = %(item_id)s
), item AS (
    UPDATE papayya.items i
    SET status = %(item_status)s, reasons = %(reasons)s, output = %(output)s, error = %(error)s,
        fingerprint = %(fingerprint)s, cost_usd = cost.item_usd, cost_unknown = cost.item_unknown,
        lease_token = NULL, lease_expires_at = NULL, updated_at = now(),
        finished_at = CASE WHEN %(terminal)s THEN now() END
    FROM cost
    WHERE i.item_id = %(item_id)s AND i.tenant_id = %(tenant_id)s
      AND i.lease_token = %(lease_token)s AND i.status = 'running'
    RETURNING i.item_id
), attempt AS (
    UPDATE papayya.attempts a
    SET status = %(attempt_status)s, reasons = %(reasons)s, output = %(output)s, error = %(error)s,
        fingerprint = %(fingerprint)s, cost_usd = cost.attempt_usd, cost_unknown = cost.attempt_unknown,
        finished_at = now()
    FROM cost, item
    WHERE a.attempt_id = %(attempt_id)s
    RETURNING a.attempt_id
)
SELECT (SELECT count(*) FROM item) AS applied, (SELECT count(*) FROM attempt) AS attempts;

-- name: leases_extend
UPDATE papayya.items i
SET lease_expires_at = now() + make_interval(secs => %(lease_seconds)s)
FROM unnest(%(item_ids)s::uuid[], %(tokens)s::bigint[]) AS u(item_id, token)
WHERE i.item_id = u.item_id AND i.lease_token = u.token AND i.status = 'running'
RETURNING i.item_id;

-- name: run_complete
UPDATE papayya.runs r
SET status = 'completed', finished_at = now()
WHERE r.run_id = %(run_id)s AND r.tenant_id = %(tenant_id)s AND r.status = 'running'
  AND NOT EXISTS (SELECT 1 FROM papayya.items i
                  WHERE i.run_id = r.run_id AND i.tenant_id = r.tenant_id
                    AND i.status IN ('queued', 'running', 'paused', 'stalled'));

-- name: run_get
SELECT run_id, tenant_id, agent_name, name, backend, status, replayed_from, total_items, options,
       created_at, finished_at
FROM papayya.runs
WHERE run_id = %(run_id)s AND (%(tenant_id)s::text IS NULL OR tenant_id = %(tenant_id)s);

-- name: run_status_counts
SELECT status, count(*) AS n
FROM papayya.items
WHERE run_id = %(run_id)s AND tenant_id = %(tenant_id)s
GROUP BY status;

-- name: run_cost
SELECT coalesce(sum(cost_usd), 0) AS cost_usd,
       count(*) FILTER (WHERE cost_usd IS NULL) AS unpriced_calls,
       count(*) AS calls,
       coalesce(sum(input_tokens), 0) AS input_tokens,
       coalesce(sum(output_tokens), 0) AS output_tokens
FROM papayya.llm_calls
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
SELECT provider, model, count(*) AS calls, coalesce(sum(cost_usd), 0) AS cost_usd,
       count(*) FILTER (WHERE cost_usd IS NULL) AS unpriced_calls,
       sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens
FROM papayya.llm_calls
WHERE run_id = %(run_id)s AND tenant_id = %(tenant_id)s
GROUP BY provider, model
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
SELECT item_id, run_id, tenant_id, key, input, status, attempts, max_attempts, reasons, output, error,
       fingerprint, cost_usd, cost_unknown, replayed_from, created_at, updated_at, finished_at
FROM papayya.items
WHERE item_id = %(item_id)s AND (%(tenant_id)s::text IS NULL OR tenant_id = %(tenant_id)s);

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
       (SELECT max(r.created_at) FROM papayya.runs r WHERE r.tenant_id = %(tenant_id)s) AS last_run_at,
       count(*) AS llm_calls,
       coalesce(sum(c.cost_usd), 0) AS cost_usd,
       count(*) FILTER (WHERE c.cost_usd IS NULL) AS unpriced_calls
FROM papayya.llm_calls c
WHERE c.tenant_id = %(tenant_id)s;

-- name: tenant_item_counts
SELECT status, count(*) AS n
FROM papayya.items
WHERE tenant_id = %(tenant_id)s
GROUP BY status;

-- name: run_list_detail
SELECT r.run_id, r.tenant_id, r.agent_name, r.name, r.backend, r.status, r.total_items, r.created_at,
       r.finished_at, i.counts, c.calls, c.cost_usd, c.unpriced_calls
FROM papayya.runs r
CROSS JOIN LATERAL (
    SELECT coalesce(jsonb_object_agg(s.status, s.n), '{}'::jsonb) AS counts
    FROM (SELECT status, count(*) AS n FROM papayya.items
          WHERE run_id = r.run_id AND tenant_id = r.tenant_id GROUP BY status) s
) i
CROSS JOIN LATERAL (
    SELECT count(*) AS calls, coalesce(sum(cost_usd), 0) AS cost_usd,
           count(*) FILTER (WHERE cost_usd IS NULL) AS unpriced_calls
    FROM papayya.llm_calls WHERE run_id = r.run_id AND tenant_id = r.tenant_id
) c
WHERE (%(tenant_id)s::text IS NULL OR r.tenant_id = %(tenant_id)s)
ORDER BY r.created_at DESC, r.run_id
LIMIT %(limit)s;

-- name: item_id_by_key
SELECT item_id FROM papayya.items
WHERE run_id = %(run_id)s AND tenant_id = %(tenant_id)s AND key = %(key)s;
