-- Per-tenant quotas and order rates, set by an admin (PUT /v1/tenants/{tenant}/quotas,
-- `order-api tenants ...`). A quota row with vendor '' holds for all of the tenant's vendors
-- together; a row naming a vendor, for that vendor alone. NULL: no such limit.
CREATE TABLE tenant_quotas (
    tenant                TEXT NOT NULL,
    vendor                TEXT NOT NULL,
    max_live_servers      BIGINT,
    max_orders_in_flight  BIGINT,
    updated_at            TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (tenant, vendor)
);

-- A tenant's own rate of POST /v1/orders (token bucket per order-api instance), in place of
-- the instance's default.
CREATE TABLE tenant_rates (
    tenant        TEXT PRIMARY KEY,
    per_second    DOUBLE PRECISION NOT NULL,
    burst         BIGINT NOT NULL,
    updated_at    TEXT COLLATE "C" NOT NULL
);

-- A tenant's usage is counted from its orders when one of its orders is accepted: the count
-- reads at most the tenant's limit of index entries (only live statuses are counted).
CREATE INDEX orders_by_tenant_status ON orders (tenant, status, vendor);
