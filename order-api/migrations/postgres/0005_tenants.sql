-- Tenants and API tokens. Every order belongs to a tenant; a tenant's token sees only its own
-- orders. Tokens are stored as their SHA-256 only (they are 256 random bits, so a fast hash
-- is as safe as a slow one); an admin token (no tenant) sees every order.
CREATE TABLE api_tokens (
    token_id      TEXT PRIMARY KEY,            -- public id, for listing and revoking
    token_sha256  TEXT NOT NULL UNIQUE,
    tenant        TEXT,                        -- NULL: an admin token
    label         TEXT NOT NULL,
    created_at    TEXT COLLATE "C" NOT NULL,
    revoked_at    TEXT COLLATE "C"
);

-- Orders made before tenants existed belong to the tenant 'default'.
ALTER TABLE orders ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default';
CREATE INDEX orders_by_tenant ON orders (tenant, id);

-- Idempotency keys are per tenant: two tenants may pick the same key.
CREATE TABLE idempotency_keys_by_tenant (
    tenant         TEXT NOT NULL,
    key            TEXT NOT NULL,
    request_sha256 TEXT NOT NULL,
    order_id       TEXT COLLATE "C" NOT NULL REFERENCES orders (id) DEFERRABLE INITIALLY DEFERRED,
    created_at     TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (tenant, key)
);
INSERT INTO idempotency_keys_by_tenant (tenant, key, request_sha256, order_id, created_at)
    SELECT orders.tenant, k.key, k.request_sha256, k.order_id, k.created_at
    FROM idempotency_keys AS k JOIN orders ON orders.id = k.order_id;
DROP TABLE idempotency_keys;
ALTER TABLE idempotency_keys_by_tenant RENAME TO idempotency_keys;
