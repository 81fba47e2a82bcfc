-- papayya schema, version 7: one control plane in the store.

-- A run's and a tenant's control generation, bumped in the same statement as every pause, resume,
-- budget change and cap change, and announced on the papayya_control channel. A process may act on
-- what it cached about a run (paused or not, budget room leased under a limit) only while the
-- generation it cached it at is still the current one.
ALTER TABLE papayya.runs ADD COLUMN gen bigint NOT NULL DEFAULT 0;
ALTER TABLE papayya.tenants ADD COLUMN gen bigint NOT NULL DEFAULT 0;

-- The fencing token of the attempt that paid for a call, and whether its lease had already moved on
-- when the call was recorded (a frozen or partitioned worker's call): billed, so recorded, and flagged.
ALTER TABLE papayya.llm_calls
    ADD COLUMN lease_token bigint,
    ADD COLUMN lease_lost boolean NOT NULL DEFAULT false;

-- An item's cost is now kept up to date by every ledger row written for it (a late call included),
-- not summed once when the item concludes: bring every item in line with its ledger.
UPDATE papayya.items i
SET cost_usd = s.cost_usd, cost_unknown = s.cost_unknown
FROM (SELECT item_id, coalesce(sum(cost_usd), 0) AS cost_usd, bool_or(cost_usd IS NULL) AS cost_unknown
      FROM papayya.llm_calls GROUP BY item_id) s
WHERE i.item_id = s.item_id
  AND (i.cost_usd <> s.cost_usd OR i.cost_unknown <> s.cost_unknown);
