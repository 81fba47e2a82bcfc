-- Named queries of the native engine: claiming items in batches, finishing attempts in batches, the
-- reaper, and what a waiting map() or `papayya runs show --watch` reads. READ COMMITTED, autocommit:
-- each statement decides on what is committed when it runs, and rows are taken with SKIP LOCKED, so
-- workers never wait on each other.

-- name: items_claim
-- Up to %(limit)s queued items whose time has come, of running runs of the given backend and agents (and
-- runs, when given), fairly across tenants: each run offers its oldest items, each tenant's offers are
-- ranked 1, 2, 3..., and the claim takes rank 1 of every tenant before rank 2 of any (higher run
-- priority first). A tenant with a concurrency cap gets at most its free slots. Every claimed item
-- gets a fencing token from the sequence and a lease on the database clock; the row carries what its
-- next attempt needs (number, id, input, journal, failed attempts so far). The attempt itself begins
-- with attempts_begin, when the worker has a thread for it: an item that waited in a worker's buffer
-- and never began is not counted as having crashed that worker.
-- An item that lost its worker before (stalls > 0) may be what crashed it: it is claimed only by a
-- worker that holds nothing else (%(alone)s), and then alone, so it cannot take innocent items down
-- with it again.
WITH active AS MATERIALIZED (
    SELECT r.run_id, r.tenant_id, r.agent_name, r.priority, r.created_at, r.from_journal, r.gen,
           coalesce(r.options->>'llm_mode', 'live') AS llm_mode
    FROM papayya.runs r
    WHERE r.status = 'running' AND r.backend = %(backend)s
      AND r.agent_name = ANY(%(agents)s::text[])
      AND (%(run_ids)s::uuid[] IS NULL OR r.run_id = ANY(%(run_ids)s::uuid[]))
), room AS MATERIALIZED (
    SELECT t.tenant_id,
           CASE WHEN t.max_running IS NULL THEN %(limit)s::bigint
                ELSE greatest(0, t.max_running - (SELECT count(*) FROM papayya.items i
                                                  WHERE i.tenant_id = t.tenant_id AND i.status = 'running'))
           END AS slots
    FROM papayya.tenants t
    WHERE t.tenant_id IN (SELECT tenant_id FROM active)
), offered AS MATERIALIZED (
    SELECT o.item_id, o.stalls, a.run_id, a.tenant_id, a.priority, a.created_at, o.available_at
    FROM active a
    CROSS JOIN LATERAL (
        SELECT i.item_id, i.available_at, i.stalls
        FROM papayya.items i
        WHERE i.run_id = a.run_id AND i.status = 'queued' AND i.available_at <= now()
          AND (i.stalls = 0 OR %(alone)s)
        ORDER BY i.available_at
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED
    ) o
), ranked AS (
    SELECT o.item_id, o.priority, o.stalls, m.slots,
           row_number() OVER (PARTITION BY o.tenant_id
                              ORDER BY o.priority DESC, o.created_at, o.available_at) AS rank
    FROM offered o JOIN room m USING (tenant_id)
), chosen AS (
    SELECT item_id FROM ranked
    WHERE rank <= slots
    ORDER BY stalls > 0 DESC, priority DESC, rank, random()
    LIMIT CASE WHEN EXISTS (SELECT 1 FROM ranked WHERE stalls > 0 AND rank <= slots) THEN 1
               ELSE %(limit)s END
), claimed AS (
    UPDATE papayya.items i
    SET status = 'running',
        lease_token = nextval('papayya.lease_token_seq'),
        lease_expires_at = now() + make_interval(secs => %(lease_seconds)s),
        updated_at = now()
    FROM chosen c
    WHERE i.item_id = c.item_id
    -- the next attempt's number: after every attempt recorded so far (items.attempts catches up when
    -- an attempt ends: attempts_begin does not rewrite the item's row)
    RETURNING i.item_id, i.key, i.run_id, i.tenant_id,
              greatest(i.attempts, (SELECT max(p.number) FROM papayya.attempts p WHERE p.item_id = i.item_id))
                  + 1 AS attempts,
              i.stalls, i.lease_token, i.input, i.replayed_from
)
SELECT c.item_id, c.key, c.run_id, c.tenant_id, c.attempts, c.stalls, c.lease_token, c.replayed_from,
       -- inline for items recorded before schema 13, else written once apart (0013_item_inputs)
       coalesce(c.input, (SELECT n.input FROM papayya.item_inputs n WHERE n.item_id = c.item_id AND n.tenant_id = c.tenant_id)) AS input,
       gen_random_uuid() AS attempt_id, a.agent_name, a.from_journal, a.gen AS run_gen, a.llm_mode,
       CASE WHEN c.attempts = 1 AND NOT a.from_journal THEN '{}'::jsonb ELSE
           (SELECT coalesce(jsonb_object_agg(s.step_key,
                                             jsonb_build_object('result', s.result, 'hash', s.request_hash)),
                            '{}'::jsonb)
              FROM papayya.steps s
              WHERE s.item_id = c.item_id OR (a.from_journal AND s.item_id = c.replayed_from))
       END AS journal,
       CASE WHEN c.attempts = 1 THEN 0 ELSE
           (SELECT count(*) FROM papayya.attempts f WHERE f.item_id = c.item_id AND f.status = 'failed')
       END AS failures
FROM claimed c JOIN active a USING (run_id);

-- name: attempts_begin
-- The attempts of claimed items that start now, in one statement, recorded as running and fenced by the
-- lease token (an item whose token moved on, or that the reaper gave back, does not begin: it is not
-- among the rows returned). Only an attempt that began can be counted as having lost its worker
-- (items_reap). The item's row is locked, not rewritten (a rewrite of the item with its input and
-- every index entry, per item, doubled what draining writes): its attempt count catches up when the
-- attempt ends (attempts_finish, items_reap, run_resume), and claims number attempts from both.
WITH u AS MATERIALIZED (
    SELECT *
    FROM jsonb_to_recordset(%(begins)s::jsonb)
         AS u(item_id uuid, tenant_id text, token bigint, attempt_id uuid, number integer)
), locked AS (
    -- in item id order, as every statement that changes many items does: no deadlocks. Each row is
    -- looked up by its id (a subquery that locks is never flattened into a join): a join let the
    -- planner read every entry of the index of running items instead, dead ones included, which grew
    -- with every item drained until a vacuum.
    SELECT i.item_id, i.run_id, i.tenant_id, i.lease_token
    FROM (SELECT * FROM u ORDER BY item_id) v
    CROSS JOIN LATERAL (
        SELECT i.item_id, i.run_id, i.tenant_id, i.lease_token FROM papayya.items i
        WHERE i.item_id = v.item_id AND i.tenant_id = v.tenant_id AND i.lease_token = v.token
          AND i.status = 'running'
        FOR UPDATE
    ) i
)
INSERT INTO papayya.attempts (attempt_id, item_id, run_id, tenant_id, number, backend, worker, lease_token)
SELECT u.attempt_id, l.item_id, l.run_id, l.tenant_id, u.number, %(backend)s, %(worker)s, l.lease_token
FROM locked l JOIN u USING (item_id)
RETURNING item_id;

-- name: attempts_finish
-- Write the results of many attempts in one statement: each item's new status and outcome (its cost is
-- kept by the ledger writes), and the attempt itself with its cost rolled up from the ledger, fenced
-- by the lease token: an item whose
-- token moved on (the reaper gave it to someone else) is left alone, and is not among the rows
-- returned. A retried item waits its delay (seconds) before any worker may claim it again.
WITH u AS MATERIALIZED (
    SELECT *
    FROM jsonb_to_recordset(%(finishes)s::jsonb)
         AS u(item_id uuid, tenant_id text, attempt_id uuid, token bigint, item_status text,
              attempt_status text, terminal boolean, reasons jsonb, output jsonb, error jsonb,
              fingerprint text, label text, delay float8)
), cost AS MATERIALIZED (
    SELECT u.item_id,
           coalesce(sum(c.cost_usd) FILTER (WHERE c.attempt_id = u.attempt_id), 0) AS attempt_usd,
           coalesce(bool_or(c.cost_usd IS NULL) FILTER (WHERE c.attempt_id = u.attempt_id), false)
               AS attempt_unknown
    FROM u LEFT JOIN papayya.llm_calls c ON c.item_id = u.item_id AND c.attempt_id = u.attempt_id
    GROUP BY u.item_id, u.attempt_id
), locked AS (
    -- in item id order, each row by its id (as attempts_begin)
    SELECT i.item_id
    FROM (SELECT * FROM u ORDER BY item_id) v
    CROSS JOIN LATERAL (
        SELECT i.item_id FROM papayya.items i
        WHERE i.item_id = v.item_id AND i.tenant_id = v.tenant_id AND i.lease_token = v.token
          AND i.status = 'running'
        FOR UPDATE
    ) i
), item AS (
    UPDATE papayya.items i
    -- An item that stops to wait for a provider batch whose answer was already written (the batcher
    -- was quicker than this write) goes straight back to the queue: nothing else would wake it.
    SET status = CASE WHEN u.item_status = 'waiting'
                       AND NOT EXISTS (SELECT 1 FROM papayya.batch_requests r
                                       WHERE r.item_id = u.item_id AND r.status IN ('pending', 'submitted'))
                      THEN 'queued' ELSE u.item_status END,
        reasons = u.reasons, output = u.output, error = u.error,
        fingerprint = u.fingerprint, cluster_label = u.label,
        lease_token = NULL, lease_expires_at = NULL, updated_at = now(),
        available_at = now() + make_interval(secs => coalesce(u.delay, 0)),
        finished_at = CASE WHEN u.terminal THEN now() END,
        attempts = greatest(i.attempts, coalesce(b.number, 0))
    FROM u JOIN locked USING (item_id) LEFT JOIN papayya.attempts b ON b.attempt_id = u.attempt_id
    -- locked holds these rows as running under the token: no status test here, which would let the
    -- planner reach them through the index of running items (and its dead entries) instead of by id
    WHERE i.item_id = u.item_id AND i.tenant_id = u.tenant_id AND i.lease_token = u.token
    RETURNING i.item_id
), attempt AS (
    UPDATE papayya.attempts a
    SET status = u.attempt_status, reasons = u.reasons, output = u.output, error = u.error,
        fingerprint = u.fingerprint, cost_usd = cost.attempt_usd, cost_unknown = cost.attempt_unknown,
        finished_at = now()
    FROM u JOIN cost USING (item_id) JOIN item USING (item_id)
    WHERE a.attempt_id = u.attempt_id
    RETURNING a.attempt_id
)
SELECT item_id FROM item;

-- name: items_reap
-- Items whose lease expired while claimed: the worker died, froze or lost the database. An item whose
-- attempt began (attempts_begin) lost its worker: the attempt is kept as 'stalled' (what it recorded
-- stays in the journal) and the item's stalls grow by one; an item that lost its worker %(max_stalls)s
-- times is failed, so a poison item never loops. An item that only waited in the worker's buffer
-- never began: it crashed nothing, and goes back without a stall. A native item goes back to the
-- queue; an item of another backend is marked 'stalled' for its adapter to re-drive.
WITH expired AS MATERIALIZED (
    SELECT i.item_id, b.number IS NOT NULL AS began, b.number
    FROM papayya.items i
    LEFT JOIN LATERAL (
        SELECT max(a.number) AS number FROM papayya.attempts a
        WHERE a.item_id = i.item_id AND a.lease_token = i.lease_token AND a.status = 'running'
    ) b ON true
    WHERE i.status = 'running' AND i.lease_expires_at < now()
    ORDER BY i.lease_expires_at
    LIMIT %(limit)s
    FOR UPDATE OF i SKIP LOCKED
), reaped AS (
    UPDATE papayya.items i
    SET stalls = i.stalls + e.began::integer, lease_token = NULL, lease_expires_at = NULL, updated_at = now(),
        attempts = greatest(i.attempts, coalesce(e.number, 0)),
        available_at = now(),
        status = CASE WHEN e.began AND i.stalls + 1 >= %(max_stalls)s THEN 'failed'
                      WHEN r.backend = 'native' THEN 'queued' ELSE 'stalled' END,
        error = CASE WHEN e.began AND i.stalls + 1 >= %(max_stalls)s THEN %(lost_error)s::jsonb ELSE i.error END,
        fingerprint = CASE WHEN e.began AND i.stalls + 1 >= %(max_stalls)s THEN %(lost_fingerprint)s
                           ELSE i.fingerprint END,
        cluster_label = CASE WHEN e.began AND i.stalls + 1 >= %(max_stalls)s THEN %(lost_label)s
                             ELSE i.cluster_label END,
        finished_at = CASE WHEN e.began AND i.stalls + 1 >= %(max_stalls)s THEN now() END
    FROM expired e, papayya.runs r
    WHERE i.item_id = e.item_id AND r.run_id = i.run_id
    RETURNING i.item_id, i.key, i.run_id, i.tenant_id, i.status, r.backend, r.agent_name, e.began
), stalled AS (
    UPDATE papayya.attempts a SET status = 'stalled', finished_at = now()
    FROM reaped r WHERE a.item_id = r.item_id AND a.status = 'running'
    RETURNING a.item_id
)
SELECT r.item_id, r.key, r.run_id, r.tenant_id, r.status, r.backend, r.agent_name, r.began,
       (SELECT count(*) FROM stalled s WHERE s.item_id = r.item_id) AS attempts_stalled
FROM reaped r;

-- name: items_unpark
-- The safety net behind item_park: items left 'paused' in a run that is running (nothing resumes a
-- running run), untouched for %(grace)s seconds, go back to work: queued on the native engine,
-- 'stalled' for a queue backend's reaper to re-drive. So do items left 'waiting' with no batch request
-- open (the answer and the item's own write crossed: attempts_finish wakes such an item itself, but a
-- batcher that commits just after that write's snapshot leaves it to this net).
WITH orphan AS (
    SELECT i.item_id FROM papayya.runs r
    JOIN papayya.items i ON i.run_id = r.run_id AND i.status IN ('paused', 'waiting')
    WHERE r.status = 'running' AND i.updated_at < now() - make_interval(secs => %(grace)s)
      AND (i.status = 'paused'
           OR NOT EXISTS (SELECT 1 FROM papayya.batch_requests q
                          WHERE q.item_id = i.item_id AND q.status IN ('pending', 'submitted')))
    ORDER BY i.item_id
    LIMIT %(limit)s
    FOR UPDATE OF i SKIP LOCKED
)
UPDATE papayya.items i
SET status = CASE WHEN r.backend = 'native' THEN 'queued' ELSE 'stalled' END, available_at = now(),
    updated_at = now()
FROM orphan o, papayya.runs r
WHERE i.item_id = o.item_id AND r.run_id = i.run_id AND r.status = 'running'
RETURNING i.item_id, i.key, i.run_id, i.tenant_id, i.status, r.agent_name;

-- name: items_redrive_due
-- Stalled items of running runs of one backend that are due to be re-driven (published again to that
-- backend's queue), taken at most once per %(lease_seconds)s (the reaper passes several leases): they
-- stay 'stalled' until an attempt begins, so a lost re-drive is retried the next period.
WITH due AS (
    SELECT i.item_id FROM papayya.items i JOIN papayya.runs r ON r.run_id = i.run_id
    WHERE i.status = 'stalled' AND i.available_at <= now() AND r.status = 'running'
      AND r.backend = %(backend)s
    ORDER BY i.available_at
    LIMIT %(limit)s
    FOR UPDATE OF i SKIP LOCKED
)
UPDATE papayya.items i SET available_at = now() + make_interval(secs => %(lease_seconds)s)
FROM due WHERE i.item_id = due.item_id
RETURNING i.item_id, i.key, i.run_id, i.tenant_id;

-- name: run_progress
-- What a run still has to do: queued items ready now, queued items waiting out a backoff (and when the
-- first is due), running items with a live lease, running items whose lease expired (the reaper's),
-- stalled and paused items; and the run's status.
SELECT r.status,
       count(*) FILTER (WHERE i.status = 'queued' AND i.available_at <= now()) AS ready,
       count(*) FILTER (WHERE i.status = 'queued' AND i.available_at > now()) AS waiting,
       greatest(0, extract(epoch FROM min(i.available_at) FILTER (WHERE i.status = 'queued') - now()))::float8
           AS next_in,
       count(*) FILTER (WHERE i.status = 'running' AND i.lease_expires_at >= now()) AS running,
       count(*) FILTER (WHERE i.status = 'running' AND i.lease_expires_at < now()) AS expired,
       count(*) FILTER (WHERE i.status = 'stalled') AS stalled,
       count(*) FILTER (WHERE i.status = 'paused') AS paused,
       count(*) FILTER (WHERE i.status = 'waiting') AS waiting_batch
FROM papayya.runs r
LEFT JOIN papayya.items i
       ON i.run_id = r.run_id AND i.tenant_id = r.tenant_id
      AND i.status IN ('queued', 'running', 'stalled', 'paused', 'waiting')
WHERE r.run_id = %(run_id)s AND r.tenant_id = %(tenant_id)s
GROUP BY r.status;

-- name: work_ready
-- Whether any running native run of these agents has a queued item due now (a burst worker stops when
-- not), and when the next waiting one is due.
SELECT count(*) FILTER (WHERE i.available_at <= now()) AS ready,
       extract(epoch FROM min(i.available_at) - now())::float8 AS next_in,
       (SELECT count(*) FROM papayya.items j JOIN papayya.runs q ON q.run_id = j.run_id
         WHERE q.status = 'running' AND q.backend = 'native' AND q.agent_name = ANY(%(agents)s::text[])
           AND j.status = 'running') AS running
FROM papayya.runs r
JOIN papayya.items i ON i.run_id = r.run_id AND i.status = 'queued'
WHERE r.status = 'running' AND r.backend = 'native' AND r.agent_name = ANY(%(agents)s::text[]);

-- name: stalled_waiting
-- Whether a queued item that lost its worker before (it runs alone, in a worker holding nothing else)
-- waits in a running run this worker serves: a busy worker then drains, so the item is not starved.
SELECT EXISTS (
    SELECT 1 FROM papayya.runs r
    JOIN papayya.items i ON i.run_id = r.run_id AND i.status = 'queued' AND i.stalls > 0
    WHERE r.status = 'running' AND r.backend = %(backend)s AND r.agent_name = ANY(%(agents)s::text[])
      AND (%(run_ids)s::uuid[] IS NULL OR r.run_id = ANY(%(run_ids)s::uuid[]))
      AND i.available_at <= now()
) AS waiting;

-- name: work_notify
-- A hint to idle workers that an agent has new work (one per submit, resume or requeue; never a
-- trigger per row). Workers also poll, so a lost notification only delays.
SELECT pg_notify('papayya_work', %(agent)s);

-- name: tenant_max_running_set
WITH t AS (
    UPDATE papayya.tenants SET max_running = %(max_running)s, updated_at = now(), gen = gen + 1
    WHERE tenant_id = %(tenant_id)s
    RETURNING tenant_id, max_running, gen
)
SELECT t.tenant_id, t.max_running, t.gen,
       pg_notify('papayya_control', 'tenant ' || t.gen || ' ' || t.tenant_id) AS notified
FROM t;

-- name: item_park
-- Why an item could not be claimed by a backend's message, and, when its run is paused, park it as
-- 'paused' (queued or stalled items only) so that `papayya resume` re-drives it. The run row is read
-- FOR SHARE: a resume committing meanwhile is waited for and its status seen, so an item is never
-- parked against a pause that a resume has just lifted (nothing would ever resume it).
WITH item AS (
    SELECT i.item_id, i.status, i.stalls, i.lease_expires_at >= now() AS lease_live, r.status AS run_status
    FROM papayya.items i JOIN papayya.runs r ON r.run_id = i.run_id
    WHERE i.item_id = %(item_id)s AND i.tenant_id = %(tenant_id)s AND i.run_id = %(run_id)s
    FOR SHARE OF r
), parked AS (
    UPDATE papayya.items i SET status = 'paused', updated_at = now()
    FROM item WHERE i.item_id = item.item_id AND item.run_status = 'paused'
      AND i.status IN ('queued', 'stalled')
    RETURNING i.item_id
)
SELECT CASE WHEN EXISTS (SELECT 1 FROM parked) THEN 'paused' ELSE item.status END AS status,
       item.stalls, coalesce(item.lease_live, false) AS lease_live, item.run_status
FROM item;

-- name: run_tenant
-- A run's tenant and status, for a worker that knows only the run id (operator read).
SELECT run_id, tenant_id, status FROM papayya.runs WHERE run_id = %(run_id)s;

-- name: run_agents
-- The agent of each (run, tenant), for a backend publishing items the reaper hands back.
SELECT r.run_id, r.agent_name
FROM papayya.runs r
JOIN unnest(%(run_ids)s::uuid[], %(tenant_ids)s::text[]) AS u(run_id, tenant_id)
  ON r.run_id = u.run_id AND r.tenant_id = u.tenant_id;
