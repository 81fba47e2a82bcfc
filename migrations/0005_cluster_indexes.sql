-- papayya schema, version 5: covering indexes for failure clusters.
-- Failing items are scattered over the table's pages, so finding them by index still read about half
-- the heap; these partial indexes hold everything the clusters query reads, so it is an index-only
-- scan (measured over 1M items: ~105 ms -> ~13 ms, see docs/benchmarks.md). Only degraded and failed
-- items are written into them.
CREATE INDEX items_run_cluster_idx ON papayya.items (run_id, fingerprint, status, key)
    INCLUDE (item_id, tenant_id, cluster_label, finished_at, cost_usd)
    WHERE fingerprint IS NOT NULL AND status IN ('degraded', 'failed');
CREATE INDEX items_tenant_cluster_idx ON papayya.items (tenant_id, fingerprint, status, key)
    INCLUDE (item_id, run_id, cluster_label, finished_at, cost_usd)
    WHERE fingerprint IS NOT NULL AND status IN ('degraded', 'failed');
