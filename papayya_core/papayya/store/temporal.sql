-- Named queries of the Temporal adapter (papayya_temporal). Every query is scoped by tenant.

-- name: temporal_item_lease_left
-- Seconds until the lease of a running item expires (0 when it has expired or the item is not
-- running): how long a Temporal retry of that item should wait before it can claim it.
SELECT greatest(0, extract(epoch FROM lease_expires_at - now()))::float8 AS seconds
FROM papayya.items
WHERE item_id = %(item_id)s AND tenant_id = %(tenant_id)s AND status = 'running'
  AND lease_expires_at IS NOT NULL;

-- name: temporal_item_result
-- What a duplicate delivery of a finished item answers: its status and output (or error).
SELECT status, output, error
FROM papayya.items
WHERE item_id = %(item_id)s AND tenant_id = %(tenant_id)s;

-- name: temporal_run_progress
-- How far a run driven by a Temporal workflow is: items by status, the cost so far, the run's status.
SELECT r.status AS run_status,
       count(i.item_id) FILTER (WHERE i.status = 'succeeded') AS succeeded,
       count(i.item_id) FILTER (WHERE i.status = 'degraded') AS degraded,
       count(i.item_id) FILTER (WHERE i.status = 'failed') AS failed,
       count(i.item_id) FILTER (WHERE i.status = 'cancelled') AS cancelled,
       count(i.item_id) FILTER (WHERE i.status = 'paused') AS paused,
       count(i.item_id) FILTER (WHERE i.status = 'queued') AS queued,
       count(i.item_id) FILTER (WHERE i.status = 'running') AS running,
       count(i.item_id) FILTER (WHERE i.status = 'stalled') AS stalled,
       coalesce(sum(i.cost_usd), 0) AS cost_usd
FROM papayya.runs r
LEFT JOIN papayya.items i ON i.run_id = r.run_id AND i.tenant_id = r.tenant_id
WHERE r.run_id = %(run_id)s AND r.tenant_id = %(tenant_id)s
GROUP BY r.status;
