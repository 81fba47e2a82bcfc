-- papayya schema, version 6: the native engine across processes and machines.

-- When a queued item may start: now for new work, later for a retry waiting out its backoff. Every
-- worker claims only items whose time has come, so a backoff holds whoever picks the item up.
-- How many times the item lost its worker (its lease expired with the attempt still running): past
-- the limit it is failed, so a poison item that kills its process never loops.
ALTER TABLE papayya.items
    ADD COLUMN available_at timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN stalls integer NOT NULL DEFAULT 0;

-- Claims take queued items of running runs; this index holds exactly those, oldest first.
CREATE INDEX items_queued_idx ON papayya.items (run_id, available_at) WHERE status = 'queued';
-- Queued items that lost their worker before: a busy worker looks for them (they run alone) here.
CREATE INDEX items_stalled_idx ON papayya.items (run_id) WHERE status = 'queued' AND stalls > 0;

-- Higher first: a claim serves runs of higher priority before the rest, fairly across tenants within
-- a priority.
ALTER TABLE papayya.runs ADD COLUMN priority integer NOT NULL DEFAULT 0;
CREATE INDEX runs_active_idx ON papayya.runs (agent_name) WHERE status = 'running';

-- A tenant's cap on items running at once across every worker (NULL: no cap). Read at each claim, so
-- a change applies without restarting workers.
ALTER TABLE papayya.tenants ADD COLUMN max_running integer CHECK (max_running > 0);
