-- papayya schema, version 14: provider batch mode. An item whose run asks for batch mode stops at an
-- LLM call that its journal does not answer: the request is kept here, pending, and the item waits
-- ('waiting') while a batcher sends the pending requests of many items to the provider's batch API
-- (about half the price) and, when the provider's batch ends, writes each answer to the ledger and
-- the journal and puts its item back in the queue, where it runs again from the top and gets the
-- answer from the journal.
--
-- The status constraints are replaced NOT VALID: every existing row passed the stricter ones they
-- replace, and validating would read the whole table under the migration's lock.
ALTER TABLE papayya.items DROP CONSTRAINT items_status_check;
ALTER TABLE papayya.items ADD CONSTRAINT items_status_check
    CHECK (status IN ('queued', 'running', 'paused', 'stalled', 'waiting',
                      'succeeded', 'degraded', 'failed', 'cancelled')) NOT VALID;
ALTER TABLE papayya.attempts DROP CONSTRAINT attempts_status_check;
ALTER TABLE papayya.attempts ADD CONSTRAINT attempts_status_check
    CHECK (status IN ('running', 'succeeded', 'degraded', 'failed', 'paused', 'cancelled', 'stalled',
                      'waiting')) NOT VALID;

-- How a ledger row was paid: 'live' (a request answered at once) or 'batch' (a row of a provider
-- batch, priced at the batch rate); live_cost_usd is what a batch row would have cost live, so a run
-- can say what batch mode saved.
ALTER TABLE papayya.llm_calls ADD COLUMN mode text NOT NULL DEFAULT 'live' CHECK (mode IN ('live', 'batch'));
ALTER TABLE papayya.llm_calls ADD COLUMN live_cost_usd numeric;

-- One provider batch. Its row is written before the provider is asked to create it (status
-- 'forming'), so a batcher that dies between the two leaves a trace its successor uses to adopt the
-- batch the provider made instead of paying for a second. Exactly one batcher works on a batch at a
-- time: the lease (leased_by, lease_expires_at).
CREATE TABLE papayya.llm_batches (
    batch_id           uuid PRIMARY KEY,
    provider           text NOT NULL,
    endpoint           text NOT NULL,
    model              text NOT NULL,
    base_url           text NOT NULL DEFAULT '',
    provider_batch_id  text,
    status             text NOT NULL DEFAULT 'forming'
                       CHECK (status IN ('forming', 'submitted', 'ended', 'failed', 'cancelled')),
    rows               integer NOT NULL,
    provider_status    text,
    error              text,
    leased_by          text,
    lease_expires_at   timestamptz,
    next_poll_at       timestamptz NOT NULL DEFAULT now(),
    polls              integer NOT NULL DEFAULT 0,
    created_at         timestamptz NOT NULL DEFAULT now(),
    submitted_at       timestamptz,
    ended_at           timestamptz
);
-- a provider's batch ids are unique per provider (account); two base URLs may reuse one
CREATE UNIQUE INDEX llm_batches_provider_idx ON papayya.llm_batches (provider, base_url, provider_batch_id);
CREATE INDEX llm_batches_open_idx ON papayya.llm_batches (next_poll_at) WHERE status IN ('forming', 'submitted');

-- One deferred LLM call: the request as the live endpoint takes it, the step it answers and what the
-- budgets were charged for it (its worst case at the batch price, kept as spent until the answer
-- replaces it by the actual cost). custom_id is what the provider sees: short and opaque
-- (Anthropic allows [A-Za-z0-9_-]{1,64}).
CREATE TABLE papayya.batch_requests (
    custom_id      text PRIMARY KEY,
    item_id        uuid NOT NULL,
    tenant_id      text NOT NULL,
    run_id         uuid NOT NULL,
    attempt_id     uuid NOT NULL,
    step_key       text NOT NULL,
    request_hash   text NOT NULL,
    provider       text NOT NULL,
    endpoint       text NOT NULL,
    model          text NOT NULL,
    base_url       text NOT NULL DEFAULT '',
    body           jsonb NOT NULL,
    charged_usd    numeric NOT NULL DEFAULT 0,
    accounts       jsonb NOT NULL,
    batch_id       uuid REFERENCES papayya.llm_batches,
    status         text NOT NULL DEFAULT 'pending'
                   CHECK (status IN ('pending', 'submitted', 'answered', 'failed')),
    error          text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    finished_at    timestamptz
);
CREATE INDEX batch_requests_pending_idx ON papayya.batch_requests (provider, endpoint, model, base_url, created_at)
    WHERE status = 'pending';
CREATE INDEX batch_requests_batch_idx ON papayya.batch_requests (batch_id) WHERE batch_id IS NOT NULL;
CREATE INDEX batch_requests_item_idx ON papayya.batch_requests (item_id);
CREATE INDEX batch_requests_run_idx ON papayya.batch_requests (run_id);

ALTER TABLE papayya.batch_requests ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON papayya.batch_requests
    USING (tenant_id = (SELECT papayya.session_tenant()) OR (SELECT papayya.session_tenant()) IS NULL)
    WITH CHECK (tenant_id = (SELECT papayya.session_tenant()) OR (SELECT papayya.session_tenant()) IS NULL);

-- Roles already granted a tenant's rights get the same rights on batch_requests as on items (their
-- workers defer calls); provider batches mix tenants and belong to whoever runs the batcher.
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT DISTINCT grantee FROM information_schema.role_table_grants
             WHERE table_schema = 'papayya' AND table_name = 'items' AND privilege_type = 'INSERT'
               AND grantee <> current_user
    LOOP
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON papayya.batch_requests TO %I', r.grantee);
    END LOOP;
END
$$;
