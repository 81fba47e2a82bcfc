-- papayya schema, version 12: a call papayya's catalog and the tenant cannot price may be recorded at
-- the price its client library computed (LiteLLM's cost map), with price_source 'litellm', instead
-- of cost unknown.
--
-- The wider check is added NOT VALID: every existing row passed the narrower one it replaces, so
-- there is nothing to validate, and the migration (one transaction) takes its lock for an instant
-- instead of scanning the whole ledger while writes wait.
ALTER TABLE papayya.llm_calls DROP CONSTRAINT llm_calls_price_source_check;
ALTER TABLE papayya.llm_calls ADD CONSTRAINT llm_calls_price_source_check
    CHECK (price_source IN ('catalog', 'tenant', 'unknown', 'litellm')) NOT VALID;
