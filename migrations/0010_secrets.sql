-- papayya schema, version 10: per-tenant secrets (a tenant's own provider keys), stored encrypted.
--
-- Each value is sealed by papayya.secrets with AES-256-GCM under the key named by key_id (a
-- fingerprint of the key, never the key), with the tenant id and the secret's name bound as
-- associated data: a ciphertext copied to another tenant or name does not decrypt. The database never
-- sees a value or a key; a dump of this table without the key is noise. `papayya tenants secret
-- rotate` re-seals rows whose key_id is not the current key's.
CREATE TABLE papayya.tenant_secrets (
    tenant_id   text NOT NULL REFERENCES papayya.tenants ON DELETE CASCADE,
    name        text NOT NULL CHECK (name ~ '^[A-Za-z0-9_.-]{1,64}$'),
    key_id      text NOT NULL CHECK (key_id ~ '^[0-9a-f]{16}$'),
    nonce       bytea NOT NULL CHECK (length(nonce) = 12),
    ciphertext  bytea NOT NULL CHECK (length(ciphertext) BETWEEN 17 AND 65552),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, name)
);
-- Rotation finds what is still sealed under an old key without reading every tenant's rows.
CREATE INDEX tenant_secrets_key_idx ON papayya.tenant_secrets (key_id);
