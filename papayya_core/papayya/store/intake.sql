-- Named queries of intake (papayya/intake.py): a message a queue delivered without a papayya item id
-- becomes an item of its tenant's open run for the agent, the backend and the UTC day. That run's id
-- is derived from those four (an md5 as a uuid), so every worker finds the same run without a lookup
-- table, and the primary key makes concurrent first messages of a day create it once.

-- name: intake_adopt
-- Record the message as an item of today's run (creating the run, or reopening it if it completed),
-- unless today's or yesterday's run already holds an item with this key (a redelivery: that item is
-- returned). A message for a cancelled run is recorded as cancelled. The first item of a new day's run
-- completes the earlier runs of the same tenant, agent and backend that have nothing left to do.
WITH ids AS (
    SELECT d.today,
           md5(jsonb_build_array('papayya intake', %(tenant_id)s::text, %(agent_name)s::text,
                                 %(backend)s::text, d.today::text)::text)::uuid AS run_id,
           md5(jsonb_build_array('papayya intake', %(tenant_id)s::text, %(agent_name)s::text,
                                 %(backend)s::text, (d.today - 1)::text)::text)::uuid AS yesterday
    FROM (SELECT (now() AT TIME ZONE 'UTC')::date AS today) d
), known AS (
    SELECT i.item_id, i.run_id, i.key
    FROM papayya.items i, ids
    WHERE i.tenant_id = %(tenant_id)s AND i.run_id IN (ids.run_id, ids.yesterday) AND i.key = %(key)s
    ORDER BY i.created_at DESC
    LIMIT 1
), run AS (
    INSERT INTO papayya.runs (run_id, tenant_id, agent_name, name, backend, total_items, options, entrypoint)
    SELECT ids.run_id, %(tenant_id)s, %(agent_name)s, 'intake ' || ids.today::text, %(backend)s, 1,
           %(options)s, %(entrypoint)s
    FROM ids
    WHERE NOT EXISTS (SELECT 1 FROM known)
    ON CONFLICT (run_id) DO UPDATE
    SET total_items = runs.total_items + 1,
        status = CASE WHEN runs.status = 'completed' THEN 'running' ELSE runs.status END,
        finished_at = CASE WHEN runs.status = 'completed' THEN NULL ELSE runs.finished_at END
    RETURNING run_id, status, (xmax = 0) AS created
), closed AS (
    UPDATE papayya.runs r SET status = 'completed', finished_at = now()
    FROM run
    WHERE run.created AND r.tenant_id = %(tenant_id)s AND r.agent_name = %(agent_name)s
      AND r.backend = %(backend)s AND r.status = 'running' AND r.run_id <> run.run_id
      AND r.options ? 'intake'
      AND NOT EXISTS (SELECT 1 FROM papayya.items i
                      WHERE i.run_id = r.run_id AND i.tenant_id = r.tenant_id
                        AND i.status IN ('queued', 'running', 'paused', 'stalled', 'waiting'))
    RETURNING r.run_id
), item AS (
    INSERT INTO papayya.items (item_id, run_id, tenant_id, key, max_attempts, status, finished_at)
    SELECT %(item_id)s, run.run_id, %(tenant_id)s, %(key)s, %(max_attempts)s,
           CASE WHEN run.status = 'cancelled' THEN 'cancelled' ELSE 'queued' END,
           CASE WHEN run.status = 'cancelled' THEN now() END
    FROM run
    ON CONFLICT (run_id, key) DO NOTHING
    RETURNING item_id, run_id, key
), item_input AS (
    -- the input apart, written once (0013_item_inputs); only for an item this message recorded
    INSERT INTO papayya.item_inputs (item_id, tenant_id, input)
    SELECT item_id, %(tenant_id)s, %(input)s::jsonb FROM item
)
SELECT item_id, run_id, key, false AS adopted FROM known
UNION ALL
SELECT item_id, run_id, key, true AS adopted FROM item;

-- name: intake_find
-- The item a concurrent delivery of the same message just recorded (intake_adopt saw the conflict but,
-- reading from its own snapshot, not the row).
WITH ids AS (
    SELECT md5(jsonb_build_array('papayya intake', %(tenant_id)s::text, %(agent_name)s::text,
                                 %(backend)s::text, d.today::text)::text)::uuid AS run_id,
           md5(jsonb_build_array('papayya intake', %(tenant_id)s::text, %(agent_name)s::text,
                                 %(backend)s::text, (d.today - 1)::text)::text)::uuid AS yesterday
    FROM (SELECT (now() AT TIME ZONE 'UTC')::date AS today) d
)
SELECT i.item_id, i.run_id, i.key
FROM papayya.items i, ids
WHERE i.tenant_id = %(tenant_id)s AND i.run_id IN (ids.run_id, ids.yesterday) AND i.key = %(key)s
ORDER BY i.created_at DESC
LIMIT 1;
