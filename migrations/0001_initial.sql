-- papayya schema, version 1: tenants, runs, items, attempts, the step journal and the LLM-call ledger.
-- Forward-only. Applied by papayya.migrate under an advisory lock, in one transaction.

CREATE SCHEMA IF NOT EXISTS papayya;

-- Fencing tokens: every claim of an item takes the next value; a state change that carries an older
-- token than the item's current one is rejected.
CREATE SEQUENCE papayya.lease_token_seq;

CREATE TABLE papayya.tenants (
    tenant_id   text PRIMARY KEY CHECK (length(tenant_id) BETWEEN 1 AND 128),
    config      jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Negotiated prices: USD per million tokens, per tenant, provider and model. Absent columns fall back
-- to the public price for that token kind.
CREATE TABLE papayya.price_overrides (
    tenant_id        text NOT NULL REFERENCES papayya.tenants ON DELETE CASCADE,
    provider         text NOT NULL,
    model            text NOT NULL,
    input_mtok       numeric,
    output_mtok      numeric,
    cache_read_mtok  numeric,
    cache_write_mtok numeric,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, provider, model)
);

CREATE TABLE papayya.runs (
    run_id         uuid PRIMARY KEY,
    tenant_id      text NOT NULL REFERENCES papayya.tenants,
    agent_name     text NOT NULL,
    name           text,
    backend        text NOT NULL,
    status         text NOT NULL DEFAULT 'running'
                   CHECK (status IN ('running', 'paused', 'completed', 'cancelled')),
    replayed_from  uuid REFERENCES papayya.runs,
    total_items    integer NOT NULL DEFAULT 0,
    options        jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at     timestamptz NOT NULL DEFAULT now(),
    finished_at    timestamptz
);
CREATE INDEX runs_tenant_created_idx ON papayya.runs (tenant_id, created_at DESC);
CREATE INDEX runs_created_idx ON papayya.runs (created_at DESC);

CREATE TABLE papayya.items (
    item_id          uuid PRIMARY KEY,
    run_id           uuid NOT NULL REFERENCES papayya.runs,
    tenant_id        text NOT NULL REFERENCES papayya.tenants,
    key              text NOT NULL,
    input            jsonb NOT NULL,
    status           text NOT NULL DEFAULT 'queued'
                     CHECK (status IN ('queued', 'running', 'paused', 'stalled',
                                       'succeeded', 'degraded', 'failed', 'cancelled')),
    attempts         integer NOT NULL DEFAULT 0,
    max_attempts     integer NOT NULL DEFAULT 1 CHECK (max_attempts >= 1),
    reasons          jsonb NOT NULL DEFAULT '[]'::jsonb,
    output           jsonb,
    error            jsonb,
    fingerprint      text,
    cost_usd         numeric NOT NULL DEFAULT 0,
    cost_unknown     boolean NOT NULL DEFAULT false,
    lease_token      bigint,
    lease_expires_at timestamptz,
    replayed_from    uuid REFERENCES papayya.items,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz,
    UNIQUE (run_id, key)
);
CREATE INDEX items_run_status_idx ON papayya.items (run_id, status);
CREATE INDEX items_tenant_status_idx ON papayya.items (tenant_id, status);
CREATE INDEX items_run_fingerprint_idx ON papayya.items (run_id, fingerprint) WHERE fingerprint IS NOT NULL;
CREATE INDEX items_lease_idx ON papayya.items (lease_expires_at) WHERE status = 'running';

CREATE TABLE papayya.attempts (
    attempt_id    uuid PRIMARY KEY,
    item_id       uuid NOT NULL REFERENCES papayya.items,
    run_id        uuid NOT NULL REFERENCES papayya.runs,
    tenant_id     text NOT NULL REFERENCES papayya.tenants,
    number        integer NOT NULL CHECK (number >= 1),
    backend       text NOT NULL,
    worker        text NOT NULL,
    lease_token   bigint NOT NULL,
    status        text NOT NULL DEFAULT 'running'
                  CHECK (status IN ('running', 'succeeded', 'degraded', 'failed',
                                    'paused', 'cancelled', 'stalled')),
    reasons       jsonb NOT NULL DEFAULT '[]'::jsonb,
    output        jsonb,
    error         jsonb,
    fingerprint   text,
    cost_usd      numeric NOT NULL DEFAULT 0,
    cost_unknown  boolean NOT NULL DEFAULT false,
    started_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    UNIQUE (item_id, number)
);
CREATE INDEX attempts_run_idx ON papayya.attempts (run_id);

-- The journal: one row per completed step of an item, keyed by a step key that is stable across
-- attempts ("kind:name#occurrence"). A retried or resumed attempt gets these results back.
CREATE TABLE papayya.steps (
    item_id     uuid NOT NULL REFERENCES papayya.items,
    step_key    text NOT NULL,
    tenant_id   text NOT NULL,
    attempt_id  uuid NOT NULL REFERENCES papayya.attempts,
    kind        text NOT NULL CHECK (kind IN ('step', 'llm', 'tool', 'retrieve')),
    result      jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (item_id, step_key)
);

-- The ledger: every LLM call that spent money. cost_usd is NULL when the price is unknown, never 0.
CREATE TABLE papayya.llm_calls (
    call_id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id           text NOT NULL REFERENCES papayya.tenants,
    run_id              uuid NOT NULL REFERENCES papayya.runs,
    item_id             uuid NOT NULL REFERENCES papayya.items,
    attempt_id          uuid NOT NULL REFERENCES papayya.attempts,
    step_key            text,
    provider            text NOT NULL,
    model               text NOT NULL,
    input_tokens        integer NOT NULL DEFAULT 0 CHECK (input_tokens >= 0),
    output_tokens       integer NOT NULL DEFAULT 0 CHECK (output_tokens >= 0),
    cache_read_tokens   integer NOT NULL DEFAULT 0 CHECK (cache_read_tokens >= 0),
    cache_write_tokens  integer NOT NULL DEFAULT 0 CHECK (cache_write_tokens >= 0),
    stop_reason         text,
    latency_ms          double precision,
    cost_usd            numeric,
    price_source        text NOT NULL CHECK (price_source IN ('catalog', 'tenant', 'unknown')),
    idempotency_key     text,
    created_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX llm_calls_run_idx ON papayya.llm_calls (run_id);
CREATE INDEX llm_calls_item_idx ON papayya.llm_calls (item_id);
CREATE INDEX llm_calls_tenant_time_idx ON papayya.llm_calls (tenant_id, created_at);
