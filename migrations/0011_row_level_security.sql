-- papayya schema, version 11: tenant isolation held by the store itself (docs/security.md).
--
-- Row-level security is enabled, not forced, on every table that holds a tenant's rows: the role that
-- owns the schema (it migrates and administers) and superusers stay unscoped; every other role sees and
-- writes the rows of the tenant its session is scoped to, and nothing else:
--
-- * a tenant-bound role (`papayya tenants grant T --role R`) is mapped to exactly one tenant in
--   papayya.tenant_roles, by its session user. Nothing it sets in its session (papayya.tenant, SET
--   ROLE) changes who it is: only a superuser can change the session user.
-- * any other role is a trusted application role: scoped to the tenant in the papayya.tenant setting
--   when it sets one (PAPAYYA_TENANT, papayya.configure(tenant=...)), unscoped otherwise.
--
-- Shared on purpose (say so in the threat model): rate_closures (a provider's 429 closes it for all),
-- rate_limits rows for every tenant ('*': a shared bucket every tenant's calls draw from), the
-- LISTEN/NOTIFY channels and the fencing-token sequence.

CREATE TABLE papayya.tenant_roles (
    role_name   name PRIMARY KEY,
    tenant_id   text NOT NULL REFERENCES papayya.tenants ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON papayya.tenant_roles FROM PUBLIC;
-- Read only by its owner and through papayya.session_tenant(): no grant, and no row for anyone else.
ALTER TABLE papayya.tenant_roles ENABLE ROW LEVEL SECURITY;
CREATE POLICY owner_only ON papayya.tenant_roles USING (false);

-- The tenant the current session is scoped to, NULL for an unscoped session. SECURITY DEFINER: a
-- tenant-bound role cannot read tenant_roles itself; inside, current_user is the definer, so the
-- mapping is looked up by session_user, the role that logged in.
CREATE FUNCTION papayya.session_tenant() RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog AS $$
    SELECT coalesce((SELECT r.tenant_id FROM papayya.tenant_roles r WHERE r.role_name = session_user),
                    nullif(current_setting('papayya.tenant', true), ''))
$$;

-- Whether the session is tenant-bound (mapped), whatever it set.
CREATE FUNCTION papayya.session_bound() RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog AS $$
    SELECT EXISTS (SELECT 1 FROM papayya.tenant_roles r WHERE r.role_name = session_user)
$$;

-- One policy per tenant table: its rows are those of the session's tenant, or every row for an
-- unscoped session. The function calls sit in sub-selects so each statement evaluates them once, not
-- once per row.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['tenants', 'price_overrides', 'runs', 'items', 'attempts', 'steps',
                             'llm_calls', 'budget_accounts', 'run_item_counts', 'run_call_counts',
                             'tenant_secrets']
    LOOP
        EXECUTE format('ALTER TABLE papayya.%I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY tenant_rows ON papayya.%I '
            'USING (tenant_id = (SELECT papayya.session_tenant()) OR (SELECT papayya.session_tenant()) IS NULL) '
            'WITH CHECK (tenant_id = (SELECT papayya.session_tenant()) OR (SELECT papayya.session_tenant()) IS NULL)',
            t);
    END LOOP;
END
$$;

-- Rate limits: a tenant's own rows, and the rows for every tenant ('*'), which its calls read and draw
-- down (a shared bucket) but which only an unscoped session creates, changes the limits of or deletes.
ALTER TABLE papayya.rate_limits ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON papayya.rate_limits
    USING (tenant_id = '*' OR tenant_id = (SELECT papayya.session_tenant())
           OR (SELECT papayya.session_tenant()) IS NULL)
    WITH CHECK (tenant_id = '*' OR tenant_id = (SELECT papayya.session_tenant())
                OR (SELECT papayya.session_tenant()) IS NULL);
CREATE POLICY own_limits_insert ON papayya.rate_limits AS RESTRICTIVE FOR INSERT
    WITH CHECK (tenant_id = (SELECT papayya.session_tenant()) OR (SELECT papayya.session_tenant()) IS NULL);
CREATE POLICY own_limits_delete ON papayya.rate_limits AS RESTRICTIVE FOR DELETE
    USING (tenant_id = (SELECT papayya.session_tenant()) OR (SELECT papayya.session_tenant()) IS NULL);

-- Foreign keys are checked without row-level security: a tenant-bound role could otherwise attach its
-- rows to another tenant's run, item or attempt (and count into that run's counters). Each reference
-- now carries the tenant, so a row can only point at a row of its own tenant. NOT VALID: every new or
-- changed row is checked, and the rows already there (each written by papayya with its own tenant)
-- are not scanned, so a large store is not held behind this migration for a scan of every row; run
-- `ALTER TABLE ... VALIDATE CONSTRAINT` later to have them checked too (it does not block writes).
-- The three unique indexes the references need are built here, which blocks writes to runs, items
-- and attempts while they build (seconds per million items).
ALTER TABLE papayya.runs ADD CONSTRAINT runs_run_tenant_key UNIQUE (run_id, tenant_id);
ALTER TABLE papayya.items ADD CONSTRAINT items_item_tenant_key UNIQUE (item_id, tenant_id);
ALTER TABLE papayya.attempts ADD CONSTRAINT attempts_attempt_tenant_key UNIQUE (attempt_id, tenant_id);
ALTER TABLE papayya.items
    ADD CONSTRAINT items_run_tenant_fkey FOREIGN KEY (run_id, tenant_id) REFERENCES papayya.runs (run_id, tenant_id) NOT VALID,
    ADD CONSTRAINT items_replayed_tenant_fkey FOREIGN KEY (replayed_from, tenant_id)
        REFERENCES papayya.items (item_id, tenant_id) NOT VALID;
ALTER TABLE papayya.runs
    ADD CONSTRAINT runs_replayed_tenant_fkey FOREIGN KEY (replayed_from, tenant_id)
        REFERENCES papayya.runs (run_id, tenant_id) NOT VALID;
ALTER TABLE papayya.attempts
    ADD CONSTRAINT attempts_item_tenant_fkey FOREIGN KEY (item_id, tenant_id)
        REFERENCES papayya.items (item_id, tenant_id) NOT VALID,
    ADD CONSTRAINT attempts_run_tenant_fkey FOREIGN KEY (run_id, tenant_id) REFERENCES papayya.runs (run_id, tenant_id) NOT VALID;
ALTER TABLE papayya.steps
    ADD CONSTRAINT steps_item_tenant_fkey FOREIGN KEY (item_id, tenant_id) REFERENCES papayya.items (item_id, tenant_id) NOT VALID,
    ADD CONSTRAINT steps_attempt_tenant_fkey FOREIGN KEY (attempt_id, tenant_id)
        REFERENCES papayya.attempts (attempt_id, tenant_id) NOT VALID;
ALTER TABLE papayya.llm_calls
    ADD CONSTRAINT llm_calls_run_tenant_fkey FOREIGN KEY (run_id, tenant_id) REFERENCES papayya.runs (run_id, tenant_id) NOT VALID,
    ADD CONSTRAINT llm_calls_item_tenant_fkey FOREIGN KEY (item_id, tenant_id)
        REFERENCES papayya.items (item_id, tenant_id) NOT VALID,
    ADD CONSTRAINT llm_calls_attempt_tenant_fkey FOREIGN KEY (attempt_id, tenant_id)
        REFERENCES papayya.attempts (attempt_id, tenant_id) NOT VALID;
-- The single-column references these replace (each composite one checks the same row and its tenant).
ALTER TABLE papayya.runs DROP CONSTRAINT runs_replayed_from_fkey;
ALTER TABLE papayya.items DROP CONSTRAINT items_replayed_from_fkey, DROP CONSTRAINT items_run_id_fkey;
ALTER TABLE papayya.attempts DROP CONSTRAINT attempts_item_id_fkey, DROP CONSTRAINT attempts_run_id_fkey;
ALTER TABLE papayya.steps DROP CONSTRAINT steps_attempt_id_fkey, DROP CONSTRAINT steps_item_id_fkey;
ALTER TABLE papayya.llm_calls
    DROP CONSTRAINT llm_calls_attempt_id_fkey, DROP CONSTRAINT llm_calls_item_id_fkey,
    DROP CONSTRAINT llm_calls_run_id_fkey;
