-- The counting rule (docs/concepts.md, "Counting items across runs and replays") in one place: for
-- each item a tenant sent that has replays, the item of its replay lineage (itself, a replay of it, a
-- replay of that) whose outcome counts now: the newest to conclude succeeded, degraded or failed, else
-- the original itself. An original with no row here counts as itself. Every cross-run read (tenant
-- counts, clusters across runs, items across runs, replays across runs) uses this function.
-- p_tenants: the tenants to look at; NULL for every tenant (an operator's read).
CREATE FUNCTION papayya.replay_latest(p_tenants text[])
RETURNS TABLE (original uuid, item_id uuid)
LANGUAGE sql STABLE AS $$
WITH RECURSIVE up AS (
    SELECT i.item_id, i.tenant_id, i.replayed_from AS origin
    FROM papayya.items i
    WHERE (p_tenants IS NULL OR i.tenant_id = ANY(p_tenants)) AND i.replayed_from IS NOT NULL
    UNION ALL
    SELECT up.item_id, up.tenant_id, p.replayed_from
    FROM up JOIN papayya.items p ON p.item_id = up.origin AND p.tenant_id = up.tenant_id
    WHERE p.replayed_from IS NOT NULL
), member AS (
    SELECT up.origin AS original, up.item_id, up.tenant_id
    FROM up JOIN papayya.items o ON o.item_id = up.origin AND o.tenant_id = up.tenant_id
    WHERE o.replayed_from IS NULL
)
SELECT DISTINCT ON (m.original) m.original, m.item_id
FROM (SELECT original, item_id, tenant_id FROM member
      UNION SELECT original, original, tenant_id FROM member) m
JOIN papayya.items i ON i.item_id = m.item_id AND i.tenant_id = m.tenant_id
ORDER BY m.original, i.status IN ('succeeded', 'degraded', 'failed') DESC,
         CASE WHEN i.status IN ('succeeded', 'degraded', 'failed') THEN i.finished_at END DESC NULLS LAST,
         m.item_id = m.original DESC, i.created_at DESC
$$;
