-- Named queries of the Celery adapter (adapters/papayya_celery). Message headers carry ids; these
-- read what those ids stand for, always scoped by the message's tenant.

-- name: celery_item
-- The item a message names, if it belongs to the message's tenant: its key, run and agent. No row for
-- a forged or mistaken header (another tenant's item, or no such item).
SELECT i.item_id, i.key, i.run_id, r.agent_name
FROM papayya.items i
JOIN papayya.runs r ON r.run_id = i.run_id AND r.tenant_id = i.tenant_id
WHERE i.item_id = %(item_id)s AND i.tenant_id = %(tenant_id)s;
