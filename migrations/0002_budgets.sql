-- papayya schema, version 2: budgets that pause work, request hashes in the journal.

-- A tenant's budget: an amount per period (total, month, day; periods are calendar UTC). NULL: none.
ALTER TABLE papayya.tenants
    ADD COLUMN budget_usd numeric CHECK (budget_usd >= 0),
    ADD COLUMN budget_period text NOT NULL DEFAULT 'month' CHECK (budget_period IN ('total', 'month', 'day'));

-- A run's own budget (on top of its tenant's), why it is paused, and how to load its agent again
-- (module or file + qualified name) so `papayya resume` can continue it.
ALTER TABLE papayya.runs
    ADD COLUMN budget_usd numeric CHECK (budget_usd >= 0),
    ADD COLUMN paused_reason text,
    ADD COLUMN entrypoint jsonb;
CREATE INDEX runs_tenant_status_idx ON papayya.runs (tenant_id, status);

-- Budget accounts: what is spent and reserved against one budget in one period. A reservation is
-- taken atomically before each LLM call (worst-case cost), settled with the actual cost after it,
-- released on error. The limit is read from tenants/runs at reservation time, so a budget changed at
-- runtime applies to the next call. scope 'tenant': owner = tenant id, period = 'total' | 'YYYY-MM' |
-- 'YYYY-MM-DD'; scope 'run': owner = run id, period = 'total'.
CREATE TABLE papayya.budget_accounts (
    scope         text NOT NULL CHECK (scope IN ('tenant', 'run')),
    owner         text NOT NULL,
    period        text NOT NULL,
    tenant_id     text NOT NULL REFERENCES papayya.tenants,
    period_start  timestamptz,
    spent_usd     numeric NOT NULL DEFAULT 0,
    reserved_usd  numeric NOT NULL DEFAULT 0,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, owner, period)
);

-- The journal records a hash of each step's request: a step reached again with a different request
-- is executed again instead of returning a result recorded for another question.
ALTER TABLE papayya.steps ADD COLUMN request_hash text;

-- What the gate reserved for a call, next to what it cost (estimate error = cost - reserved).
ALTER TABLE papayya.llm_calls ADD COLUMN reserved_usd numeric;
