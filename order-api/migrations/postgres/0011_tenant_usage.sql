-- Tenants' usage kept as it changes, so that checking a quota costs the same however many
-- orders a tenant has (0010 counted the orders in every accepting transaction).
--
-- Writers of orders (older order-apis still running during an upgrade) wait until this
-- migration commits: taking the strongest lock first, before any snapshot, means the count
-- below sees every committed order, and the lock never has to grow partway (which could
-- deadlock with a writer already holding a row).
LOCK TABLE orders IN ACCESS EXCLUSIVE MODE;

-- order_status_usage says what an order in each status counts towards: a live server (it
-- exists or is on its way), an order in flight (something is still happening to it). It must
-- agree with LIVE_STATUSES and IN_FLIGHT_STATUSES in order-api/src/store/quotas.rs (a test
-- checks that it does).
CREATE TABLE order_status_usage (
    status            TEXT PRIMARY KEY,
    live_servers      BIGINT NOT NULL,
    orders_in_flight  BIGINT NOT NULL
);
INSERT INTO order_status_usage (status, live_servers, orders_in_flight) VALUES
    ('pending', 1, 1), ('queued', 1, 1), ('provisioning', 1, 1), ('active', 1, 0),
    ('deleting', 1, 1), ('cancelling', 1, 1),
    ('failed', 0, 0), ('deleted', 0, 0), ('cancelled', 0, 0);

-- Changes of usage, appended by the triggers below in the transaction that changes an order:
-- rows no two transactions update, so writing them takes no lock another waits for.
CREATE TABLE tenant_usage_changes (
    id                BIGSERIAL PRIMARY KEY,
    tenant            TEXT NOT NULL,
    vendor            TEXT NOT NULL,
    live_servers      BIGINT NOT NULL,
    orders_in_flight  BIGINT NOT NULL
);
CREATE INDEX tenant_usage_changes_by_tenant ON tenant_usage_changes (tenant);

-- Usage folded from the changes, under the tenant's quota lock (see store/quotas.rs): a
-- tenant's usage is its rows here plus its changes not folded yet.
CREATE TABLE tenant_usage (
    tenant            TEXT NOT NULL,
    vendor            TEXT NOT NULL,
    live_servers      BIGINT NOT NULL,
    orders_in_flight  BIGINT NOT NULL,
    PRIMARY KEY (tenant, vendor)
);

-- What a change of an order does to its tenant's usage: one row, or none when the order counts
-- towards the same things as before (most status changes); two when it moves to another
-- vendor (or tenant).
CREATE FUNCTION record_order_usage() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.tenant = NEW.tenant AND OLD.vendor = NEW.vendor THEN
        INSERT INTO tenant_usage_changes (tenant, vendor, live_servers, orders_in_flight)
            SELECT NEW.tenant, NEW.vendor, n.live_servers - o.live_servers,
                   n.orders_in_flight - o.orders_in_flight
            FROM order_status_usage n, order_status_usage o
            WHERE n.status = NEW.status AND o.status = OLD.status
              AND (n.live_servers <> o.live_servers OR n.orders_in_flight <> o.orders_in_flight);
        RETURN NULL;
    END IF;
    IF TG_OP = 'UPDATE' THEN
        INSERT INTO tenant_usage_changes (tenant, vendor, live_servers, orders_in_flight)
            SELECT OLD.tenant, OLD.vendor, -u.live_servers, -u.orders_in_flight
            FROM order_status_usage u
            WHERE u.status = OLD.status AND (u.live_servers <> 0 OR u.orders_in_flight <> 0);
    END IF;
    INSERT INTO tenant_usage_changes (tenant, vendor, live_servers, orders_in_flight)
        SELECT NEW.tenant, NEW.vendor, u.live_servers, u.orders_in_flight
        FROM order_status_usage u
        WHERE u.status = NEW.status AND (u.live_servers <> 0 OR u.orders_in_flight <> 0);
    RETURN NULL;
END
$$;

-- With orders locked (above), no change is missed or counted twice between the count and the
-- triggers.
CREATE TRIGGER orders_usage_on_insert AFTER INSERT ON orders
    FOR EACH ROW EXECUTE FUNCTION record_order_usage();
CREATE TRIGGER orders_usage_on_update AFTER UPDATE OF status, vendor, tenant ON orders
    FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.vendor IS DISTINCT FROM NEW.vendor
          OR OLD.tenant IS DISTINCT FROM NEW.tenant)
    EXECUTE FUNCTION record_order_usage();

INSERT INTO tenant_usage (tenant, vendor, live_servers, orders_in_flight)
    SELECT o.tenant, o.vendor, SUM(u.live_servers), SUM(u.orders_in_flight)
    FROM orders o JOIN order_status_usage u ON u.status = o.status
    WHERE u.live_servers <> 0 OR u.orders_in_flight <> 0
    GROUP BY o.tenant, o.vendor;

-- 0010's index served the count; nothing reads it now.
DROP INDEX orders_by_tenant_status;
