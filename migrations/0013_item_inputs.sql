-- papayya schema, version 13: an item's input snapshot is written once, apart from the row its
-- status changes rewrite.
--
-- An item's row is rewritten by every change of its status (claimed, concluded): PostgreSQL writes a
-- whole new version of a row it updates, and an input of a kilobyte inline made each change write
-- that kilobyte again, to the table and to the WAL (more than half of what draining wrote). New items
-- keep their input in item_inputs, written once at submit; their items.input is NULL. Items recorded
-- before this migration keep theirs inline, and readers take items.input when it is set, else the
-- item_inputs row: nothing is moved, so this migration takes its locks for an instant whatever the
-- store's size (dropping NOT NULL reads no rows).
CREATE TABLE papayya.item_inputs (
    item_id   uuid PRIMARY KEY,
    tenant_id text NOT NULL,
    input     jsonb NOT NULL
);

COMMENT ON TABLE papayya.item_inputs IS
    'Input snapshots of items recorded since schema version 13 (their items.input is NULL); written '
    'once at submit, never updated. Read as coalesce(items.input, item_inputs.input) on item_id and tenant_id.';

ALTER TABLE papayya.items ALTER COLUMN input DROP NOT NULL;

-- Row-level security as on every tenant table (0011).
ALTER TABLE papayya.item_inputs ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON papayya.item_inputs
    USING (tenant_id = (SELECT papayya.session_tenant()) OR (SELECT papayya.session_tenant()) IS NULL)
    WITH CHECK (tenant_id = (SELECT papayya.session_tenant()) OR (SELECT papayya.session_tenant()) IS NULL);

-- Roles already granted a tenant's rights (tenant-bound roles, papayya_scoped) get the same rights on
-- the new table as they hold on items, so their workers and submits go on after the upgrade.
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT DISTINCT grantee FROM information_schema.role_table_grants
             WHERE table_schema = 'papayya' AND table_name = 'items' AND privilege_type = 'INSERT'
               AND grantee <> current_user
    LOOP
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON papayya.item_inputs TO %I', r.grantee);
    END LOOP;
END
$$;
