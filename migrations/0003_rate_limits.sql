-- papayya schema, version 3: provider rate limits shared by every worker, and 429 closures.

-- Limits set at runtime (`papayya limits set`), per provider and optionally per model and tenant
-- ('*' = every model / every tenant). A call is admitted only when every matching row admits it.
-- Each row also holds its shared token bucket: what is left of the per-minute allowance at
-- refilled_at, on the database clock. NULL left = a full bucket. A left below zero is debt: a call
-- estimated above the whole per-minute allowance is admitted on a full bucket and paid back by waiting.
CREATE TABLE papayya.rate_limits (
    provider             text NOT NULL CHECK (length(provider) BETWEEN 1 AND 128),
    model                text NOT NULL CHECK (length(model) BETWEEN 1 AND 256),
    tenant_id            text NOT NULL CHECK (length(tenant_id) BETWEEN 1 AND 128),
    requests_per_minute  integer CHECK (requests_per_minute > 0),
    tokens_per_minute    bigint CHECK (tokens_per_minute > 0),
    requests_left        double precision,
    tokens_left          double precision,
    refilled_at          timestamptz NOT NULL DEFAULT now(),
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, model, tenant_id),
    CHECK (requests_per_minute IS NOT NULL OR tokens_per_minute IS NOT NULL)
);

-- A provider answered 429 with Retry-After: no worker calls that provider/model ('*' = every model)
-- before closed_until. A later 429 can only extend a closure, never shorten it.
CREATE TABLE papayya.rate_closures (
    provider      text NOT NULL CHECK (length(provider) BETWEEN 1 AND 128),
    model         text NOT NULL CHECK (length(model) BETWEEN 1 AND 256),
    closed_until  timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, model)
);
