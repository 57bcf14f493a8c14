-- Orders for several servers (fleets, `count` > 1): the order a client sees is a fleet row
-- (fleet_size = its number of servers) and each of its servers is a member order (fleet_id =
-- the fleet) that the hosts serve like any order. See order-api/src/store/fleets.rs.
ALTER TABLE orders ADD COLUMN fleet_id TEXT;
ALTER TABLE orders ADD COLUMN fleet_size INTEGER;
ALTER TABLE orders ADD COLUMN all_or_nothing INTEGER NOT NULL DEFAULT 0;
CREATE INDEX orders_by_fleet ON orders (fleet_id) WHERE fleet_id IS NOT NULL;

-- A fleet settled with some of its servers running and some failed.
INSERT INTO order_status_usage (status, live_servers, orders_in_flight) VALUES
    ('partially_active', 1, 0);

-- Usage as 0011 counts it, with two weights: a fleet row counts no live server (its members
-- do, one each) and a member counts no order in flight (its fleet does, once).
DROP TRIGGER orders_usage_on_insert;
DROP TRIGGER orders_usage_on_update;

CREATE TRIGGER orders_usage_on_insert AFTER INSERT ON orders
BEGIN
    INSERT INTO tenant_usage_changes (tenant, vendor, live_servers, orders_in_flight)
        SELECT NEW.tenant, NEW.vendor,
               u.live_servers * (NEW.fleet_size IS NULL),
               u.orders_in_flight * (NEW.fleet_id IS NULL)
        FROM order_status_usage u
        WHERE u.status = NEW.status
          AND (u.live_servers * (NEW.fleet_size IS NULL) <> 0
               OR u.orders_in_flight * (NEW.fleet_id IS NULL) <> 0);
END;

CREATE TRIGGER orders_usage_on_update AFTER UPDATE OF status, vendor, tenant ON orders
WHEN OLD.status IS NOT NEW.status OR OLD.vendor IS NOT NEW.vendor OR OLD.tenant IS NOT NEW.tenant
BEGIN
    INSERT INTO tenant_usage_changes (tenant, vendor, live_servers, orders_in_flight)
        SELECT NEW.tenant, NEW.vendor,
               (n.live_servers - o.live_servers) * (NEW.fleet_size IS NULL),
               (n.orders_in_flight - o.orders_in_flight) * (NEW.fleet_id IS NULL)
        FROM order_status_usage n, order_status_usage o
        WHERE OLD.tenant = NEW.tenant AND OLD.vendor = NEW.vendor
          AND n.status = NEW.status AND o.status = OLD.status
          AND ((n.live_servers - o.live_servers) * (NEW.fleet_size IS NULL) <> 0
               OR (n.orders_in_flight - o.orders_in_flight) * (NEW.fleet_id IS NULL) <> 0);
    INSERT INTO tenant_usage_changes (tenant, vendor, live_servers, orders_in_flight)
        SELECT OLD.tenant, OLD.vendor,
               -u.live_servers * (OLD.fleet_size IS NULL),
               -u.orders_in_flight * (OLD.fleet_id IS NULL)
        FROM order_status_usage u
        WHERE (OLD.tenant <> NEW.tenant OR OLD.vendor <> NEW.vendor)
          AND u.status = OLD.status
          AND (u.live_servers * (OLD.fleet_size IS NULL) <> 0
               OR u.orders_in_flight * (OLD.fleet_id IS NULL) <> 0);
    INSERT INTO tenant_usage_changes (tenant, vendor, live_servers, orders_in_flight)
        SELECT NEW.tenant, NEW.vendor,
               u.live_servers * (NEW.fleet_size IS NULL),
               u.orders_in_flight * (NEW.fleet_id IS NULL)
        FROM order_status_usage u
        WHERE (OLD.tenant <> NEW.tenant OR OLD.vendor <> NEW.vendor)
          AND u.status = NEW.status
          AND (u.live_servers * (NEW.fleet_size IS NULL) <> 0
               OR u.orders_in_flight * (NEW.fleet_id IS NULL) <> 0);
END;
