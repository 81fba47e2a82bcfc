-- Reads of the local dashboard (`papayya ui`, papayya.ui). Each is scoped by tenant when one is given.

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
