-- Named queries of batch mode (papayya.batches): deferred LLM calls, the provider batches that carry
-- them, and the answers coming back. See migrations/0014_batch_mode.sql.

-- name: batch_request_add
-- A deferred call, recorded by the attempt that made it while it still holds its item (fenced by the
-- lease token: a worker whose lease moved on defers nothing). A step asked again with the same
-- request while its first request is still open is not recorded twice.
INSERT INTO papayya.batch_requests
    (custom_id, item_id, tenant_id, run_id, attempt_id, step_key, request_hash, provider, endpoint, model,
     base_url, body, charged_usd, accounts)
SELECT %(custom_id)s, i.item_id, i.tenant_id, i.run_id, %(attempt_id)s, %(step_key)s, %(request_hash)s,
       %(provider)s, %(endpoint)s, %(model)s, %(base_url)s, %(body)s, %(charged_usd)s, %(accounts)s
FROM papayya.items i
WHERE i.item_id = %(item_id)s AND i.tenant_id = %(tenant_id)s AND i.lease_token = %(lease_token)s
  AND i.status = 'running'
  AND NOT EXISTS (SELECT 1 FROM papayya.batch_requests o
                  WHERE o.item_id = i.item_id AND o.step_key = %(step_key)s
                    AND o.request_hash = %(request_hash)s AND o.status IN ('pending', 'submitted'))
  -- answered since this attempt read its journal (it was claimed before the answer landed): the item
  -- waits, goes straight back to the queue (attempts_finish), and its next attempt reads the answer
  AND NOT EXISTS (SELECT 1 FROM papayya.steps s
                  WHERE s.item_id = i.item_id AND s.step_key = %(step_key)s
                    AND s.request_hash = %(request_hash)s)
RETURNING custom_id;

-- name: batch_groups_due
-- Groups of pending requests (one provider, endpoint, model and base URL), oldest first, with whether
-- their oldest has waited the window (then all of them go; else only full batches: papayya.batches).
SELECT provider, endpoint, model, base_url, count(*) AS pending,
       min(created_at) <= now() - make_interval(secs => %(window)s) AS aged
FROM papayya.batch_requests
WHERE status = 'pending' AND provider = ANY(%(providers)s::text[])
GROUP BY provider, endpoint, model, base_url
ORDER BY min(created_at)
LIMIT 64;

-- name: batch_form
-- A new provider batch of up to %(limit)s pending requests of one group, written before the provider
-- is asked (status 'forming', leased to this batcher): its rows are the requests it takes.
-- The oldest first, as many as fit in %(max_bytes)s of request bodies (at least one).
WITH offered AS (
    SELECT s.custom_id FROM (
        SELECT r.custom_id, sum(octet_length(r.body::text)) OVER (ORDER BY r.created_at, r.custom_id) AS bytes,
               row_number() OVER (ORDER BY r.created_at, r.custom_id) AS n
        FROM papayya.batch_requests r
        WHERE r.status = 'pending' AND r.provider = %(provider)s AND r.endpoint = %(endpoint)s
          AND r.model = %(model)s AND r.base_url = %(base_url)s
        ORDER BY r.created_at, r.custom_id
        LIMIT %(limit)s
    ) s
    WHERE s.bytes <= %(max_bytes)s OR s.n = 1
), picked AS MATERIALIZED (
    SELECT r.custom_id FROM papayya.batch_requests r JOIN offered o USING (custom_id)
    WHERE r.status = 'pending'
    FOR UPDATE OF r SKIP LOCKED
), batch AS (
    INSERT INTO papayya.llm_batches
        (batch_id, provider, endpoint, model, base_url, rows, leased_by, lease_expires_at)
    SELECT %(batch_id)s, %(provider)s, %(endpoint)s, %(model)s, %(base_url)s, count(*), %(worker)s,
           now() + make_interval(secs => %(lease_seconds)s)
    FROM picked HAVING count(*) > 0
    RETURNING batch_id
)
UPDATE papayya.batch_requests r SET batch_id = b.batch_id, status = 'submitted'
FROM picked p, batch b
WHERE r.custom_id = p.custom_id
RETURNING r.custom_id, r.body;

-- name: batch_rows
SELECT custom_id, body FROM papayya.batch_requests WHERE batch_id = %(batch_id)s ORDER BY custom_id;

-- name: batch_lease
-- Open batches due for work (forming ones whose batcher died, submitted ones due a poll), leased to
-- this batcher: exactly one batcher works on a batch at a time.
UPDATE papayya.llm_batches b
SET leased_by = %(worker)s, lease_expires_at = now() + make_interval(secs => %(lease_seconds)s)
WHERE b.batch_id IN (
    SELECT batch_id FROM papayya.llm_batches
    WHERE status IN ('forming', 'submitted') AND next_poll_at <= now()
      AND provider = ANY(%(providers)s::text[])
      AND (lease_expires_at IS NULL OR lease_expires_at < now() OR leased_by = %(worker)s)
    ORDER BY next_poll_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
RETURNING b.batch_id, b.provider, b.endpoint, b.model, b.base_url, b.provider_batch_id, b.status, b.rows,
          b.created_at, b.polls;

-- name: batch_submitted
-- Fenced: only the batcher still holding the forming batch records what it created.
UPDATE papayya.llm_batches
SET provider_batch_id = %(provider_batch_id)s, status = 'submitted', submitted_at = now(),
    next_poll_at = now() + make_interval(secs => %(poll)s), leased_by = NULL, lease_expires_at = NULL
WHERE batch_id = %(batch_id)s AND leased_by = %(worker)s AND status = 'forming'
RETURNING batch_id;

-- name: batch_renew
-- A batcher working on a batch keeps it: its lease is extended, unless another batcher took it over
-- (its own lease ran out), which the empty answer tells it.
UPDATE papayya.llm_batches SET lease_expires_at = now() + make_interval(secs => %(lease_seconds)s)
WHERE batch_id = %(batch_id)s AND leased_by = %(worker)s AND status IN ('forming', 'submitted')
RETURNING batch_id;

-- name: batch_known_ids
SELECT provider_batch_id FROM papayya.llm_batches
WHERE provider = %(provider)s AND base_url = %(base_url)s AND provider_batch_id IS NOT NULL
  AND created_at >= %(since)s - interval '1 day';

-- name: batch_polled
-- Not ended yet: poll again later (backing off up to a few minutes), lease released.
UPDATE papayya.llm_batches
SET provider_status = %(provider_status)s, polls = polls + 1,
    next_poll_at = now() + make_interval(secs => %(delay)s), leased_by = NULL, lease_expires_at = NULL
WHERE batch_id = %(batch_id)s AND leased_by = %(worker)s;

-- name: batch_ended
UPDATE papayya.llm_batches
SET status = %(status)s, provider_status = %(provider_status)s, error = %(error)s, ended_at = now(),
    leased_by = NULL, lease_expires_at = NULL
WHERE batch_id = %(batch_id)s AND leased_by = %(worker)s
RETURNING batch_id;

-- name: batch_request_get
SELECT r.custom_id, r.item_id, r.tenant_id, r.run_id, r.attempt_id, r.step_key, r.request_hash, r.provider,
       r.model, r.charged_usd, r.accounts, r.status, r.batch_id
FROM papayya.batch_requests r
WHERE r.custom_id = ANY(%(custom_ids)s::text[]) AND r.batch_id = %(batch_id)s
FOR UPDATE;

-- name: batch_request_answered
-- The answer is in the journal and the ledger: the request is done.
UPDATE papayya.batch_requests SET status = %(status)s, error = %(error)s, finished_at = now()
WHERE custom_id = %(custom_id)s AND status = 'submitted';

-- name: batch_items_wake
-- Waiting items none of whose requests is still open go back to the queue (native runs) or to their
-- backend's re-drive ('stalled'); the attempt that deferred keeps status 'waiting' in its history.
WITH ready AS (
    SELECT i.item_id FROM papayya.items i
    WHERE i.item_id = ANY(%(item_ids)s::uuid[]) AND i.status = 'waiting'
      AND NOT EXISTS (SELECT 1 FROM papayya.batch_requests r
                      WHERE r.item_id = i.item_id AND r.status IN ('pending', 'submitted'))
    ORDER BY i.item_id
    FOR UPDATE OF i
)
UPDATE papayya.items i
SET status = CASE WHEN r.backend = 'native' THEN 'queued' ELSE 'stalled' END, available_at = now(),
    updated_at = now()
FROM ready, papayya.runs r
WHERE i.item_id = ready.item_id AND r.run_id = i.run_id
RETURNING i.item_id, i.run_id, r.agent_name;

-- name: batches_list
SELECT b.batch_id, b.provider, b.endpoint, b.model, b.provider_batch_id, b.status, b.provider_status, b.rows,
       b.error, b.polls, b.created_at, b.submitted_at, b.ended_at,
       count(r.custom_id) FILTER (WHERE r.status = 'answered') AS answered,
       count(r.custom_id) FILTER (WHERE r.status = 'failed') AS failed,
       coalesce(sum(r.charged_usd) FILTER (WHERE r.status = 'submitted'), 0) AS charged_usd
FROM papayya.llm_batches b
LEFT JOIN papayya.batch_requests r ON r.batch_id = b.batch_id
WHERE (%(batch_id)s::uuid IS NULL AND %(provider_batch_id)s::text IS NULL)
   OR b.batch_id = %(batch_id)s::uuid OR b.provider_batch_id = %(provider_batch_id)s::text
GROUP BY b.batch_id
ORDER BY b.created_at DESC
LIMIT %(limit)s;

-- name: batch_pending_counts
SELECT provider, endpoint, model, count(*) AS pending, min(created_at) AS oldest
FROM papayya.batch_requests WHERE status = 'pending'
GROUP BY provider, endpoint, model ORDER BY min(created_at);

-- name: run_batch_summary
-- A run's batch mode at a glance: items waiting, the provider batches carrying them, what its batch
-- rows cost and what they would have cost live.
SELECT (SELECT count(*) FROM papayya.items i
         WHERE i.run_id = %(run_id)s AND i.tenant_id = %(tenant_id)s AND i.status = 'waiting') AS waiting,
       (SELECT count(DISTINCT r.batch_id) FROM papayya.batch_requests r
         WHERE r.run_id = %(run_id)s AND r.tenant_id = %(tenant_id)s AND r.status = 'submitted') AS open_batches,
       (SELECT count(*) FROM papayya.batch_requests r
         WHERE r.run_id = %(run_id)s AND r.tenant_id = %(tenant_id)s AND r.status = 'pending') AS pending,
       c.batch_calls, c.batch_cost_usd, c.live_cost_usd
FROM (SELECT count(*) AS batch_calls, coalesce(sum(cost_usd), 0) AS batch_cost_usd,
             coalesce(sum(live_cost_usd), 0) AS live_cost_usd
      FROM papayya.llm_calls
      WHERE run_id = %(run_id)s AND tenant_id = %(tenant_id)s AND mode = 'batch') c;

-- name: batch_item_fail
-- A waiting item whose batch request the provider refused for good: failed with the provider's reason.
UPDATE papayya.items
SET status = 'failed', error = %(error)s, fingerprint = %(fingerprint)s, cluster_label = %(label)s,
    finished_at = now(), updated_at = now()
WHERE item_id = %(item_id)s AND tenant_id = %(tenant_id)s AND status = 'waiting'
RETURNING item_id;

-- name: batch_request_tries
-- How often the batches failed a step of an item (the request just failed included), and how many
-- attempts the item may have: a step that failed that often is not asked again.
SELECT count(r.custom_id) FILTER (WHERE r.status = 'failed') AS failed, i.max_attempts
FROM papayya.items i
LEFT JOIN papayya.batch_requests r ON r.item_id = i.item_id AND r.step_key = %(step_key)s
WHERE i.item_id = %(item_id)s AND i.tenant_id = %(tenant_id)s
GROUP BY i.max_attempts;

-- name: batches_find
-- The provider batches a reference names, for `papayya batches show`: papayya's id, a prefix of it
-- (%(low)s..%(high)s, as `batches list` prints it; both NULL when the reference cannot be one) or the
-- provider's batch id. Newest first, at most 20 (a prefix may name several).
SELECT b.batch_id, b.provider, b.endpoint, b.model, b.base_url, b.provider_batch_id, b.status,
       b.provider_status, b.rows, b.error, b.polls, b.created_at, b.submitted_at, b.ended_at,
       b.next_poll_at, b.leased_by,
       count(r.custom_id) FILTER (WHERE r.status = 'answered') AS answered,
       count(r.custom_id) FILTER (WHERE r.status = 'failed') AS failed,
       coalesce(sum(r.charged_usd) FILTER (WHERE r.status = 'submitted'), 0) AS charged_usd
FROM papayya.llm_batches b
LEFT JOIN papayya.batch_requests r ON r.batch_id = b.batch_id
WHERE b.batch_id BETWEEN %(low)s::uuid AND %(high)s::uuid OR b.provider_batch_id = %(ref)s
GROUP BY b.batch_id
ORDER BY b.created_at DESC
LIMIT 20;

-- name: batch_runs
-- The runs whose requests a provider batch carries, with how many of each run's requests are still
-- open, answered and failed.
SELECT r.tenant_id, r.run_id, count(*) AS requests,
       count(*) FILTER (WHERE r.status = 'submitted') AS open,
       count(*) FILTER (WHERE r.status = 'answered') AS answered,
       count(*) FILTER (WHERE r.status = 'failed') AS failed
FROM papayya.batch_requests r
WHERE r.batch_id = %(batch_id)s
GROUP BY r.tenant_id, r.run_id
ORDER BY count(*) DESC, r.run_id
LIMIT 50;

-- name: batch_provider_id
SELECT provider_batch_id FROM papayya.llm_batches WHERE batch_id = %(batch_id)s;
