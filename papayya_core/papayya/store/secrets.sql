-- Per-tenant secrets (papayya.secrets): sealed values in, sealed values out. The store never sees a
-- value or a key. Every query is scoped by tenant, except rotation's, an operator's read of them all.

-- name: secret_upsert
-- Store (or replace) one sealed secret; created is true when the name is new for the tenant.
INSERT INTO papayya.tenant_secrets AS s (tenant_id, name, key_id, nonce, ciphertext)
VALUES (%(tenant_id)s, %(name)s, %(key_id)s, %(nonce)s, %(ciphertext)s)
ON CONFLICT (tenant_id, name) DO UPDATE
    SET key_id = excluded.key_id,
        nonce = excluded.nonce,
        ciphertext = excluded.ciphertext,
        updated_at = now()
RETURNING s.name, s.key_id, s.created_at, s.updated_at, (s.xmax = 0) AS created;

-- name: secret_get
SELECT key_id, nonce, ciphertext
FROM papayya.tenant_secrets
WHERE tenant_id = %(tenant_id)s AND name = %(name)s;

-- name: secret_list
-- Names and dates only: a listing never carries a sealed value either.
SELECT name, key_id, created_at, updated_at
FROM papayya.tenant_secrets
WHERE tenant_id = %(tenant_id)s
ORDER BY name;

-- name: secret_delete
DELETE FROM papayya.tenant_secrets
WHERE tenant_id = %(tenant_id)s AND name = %(name)s
RETURNING name;

-- name: secrets_to_reseal
-- Secrets not sealed under the current key (of one tenant, or NULL: every tenant), locked until the
-- rotation's transaction commits so a concurrent set is not overwritten by an older value.
SELECT tenant_id, name, key_id, nonce, ciphertext
FROM papayya.tenant_secrets
WHERE key_id <> %(key_id)s AND (%(tenant_id)s::text IS NULL OR tenant_id = %(tenant_id)s)
ORDER BY tenant_id, name
FOR UPDATE;

-- name: secret_reseal
-- The same value under another key: updated_at (when the value last changed) stays.
UPDATE papayya.tenant_secrets
SET key_id = %(key_id)s, nonce = %(nonce)s, ciphertext = %(ciphertext)s
WHERE tenant_id = %(tenant_id)s AND name = %(name)s AND key_id = %(old_key_id)s;

-- name: secret_key_counts
-- How many secrets each key seals (of one tenant, or NULL: every tenant).
SELECT key_id, count(*) AS n
FROM papayya.tenant_secrets
WHERE %(tenant_id)s::text IS NULL OR tenant_id = %(tenant_id)s
GROUP BY key_id
ORDER BY key_id;
