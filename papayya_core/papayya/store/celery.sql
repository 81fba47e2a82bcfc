-- Named queries of the Celery adapter (adapters/papayya_celery). Message headers carry ids; these
-- read what those ids stand for, always scoped by the message's tenant.

-- name: celery_item
-- The item a message names, if it belongs to the message's tenant: its key, run and agent. No row for
-- a forged or mistaken header (another tenant's item, or no such item).
SELECT i.item_id, i.key, i.run_id, r.agent_name
FROM papayya.items i
JOIN papayya.runs r ON r.run_id = i.run_id AND r.tenant_id = i.tenant_id
WHERE i.item_id = %(item_id)s AND i.tenant_id = %(tenant_id)s;

-- name: celery_items_queued
-- Of the (item, tenant) pairs named by messages a dead worker had taken, the items still waiting for
-- their first (or next) attempt. Each pair is matched on its own tenant.
SELECT i.item_id
FROM papayya.items i
JOIN unnest(%(item_ids)s::uuid[], %(tenant_ids)s::text[]) AS m(item_id, tenant_id)
  ON i.item_id = m.item_id AND i.tenant_id = m.tenant_id
WHERE i.status = 'queued';
