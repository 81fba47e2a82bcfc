-- Reads of the local dashboard (`papayya ui`, papayya.ui). Each is scoped by tenant when one is given.

-- name: ui_runs_page
-- A page of runs, newest first, after a (created_at, run_id) cursor, with the columns of run_list_detail
-- and each run's own budget and paused reason. Item counts come from the (run_id, status) index.
SELECT r.run_id, r.tenant_id, r.agent_name, r.name, r.backend, r.status, r.total_items, r.created_at,
       r.finished_at, r.budget_usd, r.paused_reason, r.replayed_from, i.counts, c.calls, c.cost_usd,
       c.unpriced_calls
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
  AND (%(status)s::text IS NULL OR r.status = %(status)s)
  AND (%(before_at)s::timestamptz IS NULL OR (r.created_at, r.run_id) < (%(before_at)s, %(before_id)s::uuid))
ORDER BY r.created_at DESC, r.run_id DESC
LIMIT %(limit)s;

-- name: ui_tenant_spend
-- A tenant's LLM spend per hour or day (UTC) since a time: priced cost, calls, unpriced calls.
SELECT date_trunc(%(bucket)s::text, c.created_at, 'UTC') AS bucket,
       coalesce(sum(c.cost_usd), 0) AS cost_usd, count(*) AS calls,
       count(*) FILTER (WHERE c.cost_usd IS NULL) AS unpriced_calls
FROM papayya.llm_calls c
WHERE c.tenant_id = %(tenant_id)s AND c.created_at >= %(since)s
GROUP BY 1
ORDER BY 1;

-- name: ui_paused_runs_by_tenant
SELECT tenant_id, count(*) AS paused
FROM papayya.runs
WHERE status = 'paused' AND tenant_id = ANY(%(tenant_ids)s::text[])
GROUP BY tenant_id;
