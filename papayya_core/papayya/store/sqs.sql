-- Named queries of the SQS adapter (adapters/papayya_sqs). Message attributes carry ids; these read
-- what those ids stand for, always scoped by the message's tenant.

-- name: sqs_items
-- The items a received batch of messages names, each only if it belongs to its message's run and
-- tenant: its key, agent and status, how many attempts it was claimed for and how many of them
-- lost their worker. A message with no row here has forged or mistaken attributes.
SELECT i.item_id, i.run_id, i.tenant_id, i.key, r.agent_name, i.status, i.attempts, i.stalls
FROM unnest(%(item_ids)s::uuid[], %(run_ids)s::uuid[], %(tenant_ids)s::text[]) AS u(item_id, run_id, tenant_id)
JOIN papayya.items i ON i.item_id = u.item_id AND i.run_id = u.run_id AND i.tenant_id = u.tenant_id
JOIN papayya.runs r ON r.run_id = i.run_id AND r.tenant_id = i.tenant_id;

-- name: sqs_lease_left
-- Seconds until the lease of a running item expires (0 when it has expired or the item is not
-- running): how long a delivery that found the item held should stay hidden before it looks again.
SELECT greatest(0, extract(epoch FROM lease_expires_at - now()))::float8 AS seconds
FROM papayya.items
WHERE item_id = %(item_id)s AND tenant_id = %(tenant_id)s AND status = 'running'
  AND lease_expires_at IS NOT NULL;

-- name: sqs_item_state
-- An item's status, how many attempts it was claimed for and how many lost their worker: read for a redelivered
-- message of the team's own code (its item found again by key), as ``sqs_items`` does for papayya's.
SELECT status, attempts, stalls FROM papayya.items WHERE item_id = %(item_id)s AND tenant_id = %(tenant_id)s;
