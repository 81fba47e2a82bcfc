-- papayya schema, version 4: failure clusters and replay.

-- The human label of an item's cluster, written with its fingerprint: reason codes and field paths for
-- a degradation, exception type + normalised message + frame for a failure. Never payload data.
ALTER TABLE papayya.items ADD COLUMN cluster_label text;
CREATE INDEX items_tenant_fingerprint_idx ON papayya.items (tenant_id, fingerprint, finished_at)
    WHERE fingerprint IS NOT NULL;
CREATE INDEX items_replayed_from_idx ON papayya.items (replayed_from) WHERE replayed_from IS NOT NULL;

-- A replay run: which slice of which run it re-drives, and whether it answers from the journal of the
-- original items (recorded responses, zero cost) instead of calling providers again.
ALTER TABLE papayya.runs
    ADD COLUMN from_journal boolean NOT NULL DEFAULT false,
    ADD COLUMN replay_slice jsonb;
CREATE INDEX runs_replayed_from_idx ON papayya.runs (replayed_from) WHERE replayed_from IS NOT NULL;
