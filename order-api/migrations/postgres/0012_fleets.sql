-- Orders for several servers (fleets, `count` > 1): the order a client sees is a fleet row
-- (fleet_size = its number of servers) and each of its servers is a member order (fleet_id =
-- the fleet) that the hosts serve like any order. See order-api/src/store/fleets.rs.
ALTER TABLE orders ADD COLUMN fleet_id TEXT;
ALTER TABLE orders ADD COLUMN fleet_size BIGINT;
ALTER TABLE orders ADD COLUMN all_or_nothing BIGINT NOT NULL DEFAULT 0;
CREATE INDEX orders_by_fleet ON orders (fleet_id) WHERE fleet_id IS NOT NULL;

-- A fleet settled with some of its servers running and some failed.
INSERT INTO order_status_usage (status, live_servers, orders_in_flight) VALUES
    ('partially_active', 1, 0);

-- Usage as 0011 counts it, with two weights: a fleet row counts no live server (its members
-- do, one each) and a member counts no order in flight (its fleet does, once). Neither column
-- changes after the insert, so OLD's weights are NEW's.
CREATE OR REPLACE FUNCTION record_order_usage() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    servers BIGINT := CASE WHEN NEW.fleet_size IS NULL THEN 1 ELSE 0 END;
    flights BIGINT := CASE WHEN NEW.fleet_id IS NULL THEN 1 ELSE 0 END;
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.tenant = NEW.tenant AND OLD.vendor = NEW.vendor THEN
        INSERT INTO tenant_usage_changes (tenant, vendor, live_servers, orders_in_flight)
            SELECT NEW.tenant, NEW.vendor, servers * (n.live_servers - o.live_servers),
                   flights * (n.orders_in_flight - o.orders_in_flight)
            FROM order_status_usage n, order_status_usage o
            WHERE n.status = NEW.status AND o.status = OLD.status
              AND (servers * (n.live_servers - o.live_servers) <> 0
                   OR flights * (n.orders_in_flight - o.orders_in_flight) <> 0);
        RETURN NULL;
    END IF;
    IF TG_OP = 'UPDATE' THEN
        INSERT INTO tenant_usage_changes (tenant, vendor, live_servers, orders_in_flight)
            SELECT OLD.tenant, OLD.vendor, -servers * u.live_servers, -flights * u.orders_in_flight
            FROM order_status_usage u
            WHERE u.status = OLD.status
              AND (servers * u.live_servers <> 0 OR flights * u.orders_in_flight <> 0);
    END IF;
    INSERT INTO tenant_usage_changes (tenant, vendor, live_servers, orders_in_flight)
        SELECT NEW.tenant, NEW.vendor, servers * u.live_servers, flights * u.orders_in_flight
        FROM order_status_usage u
        WHERE u.status = NEW.status
          AND (servers * u.live_servers <> 0 OR flights * u.orders_in_flight <> 0);
    RETURN NULL;
END
$$;
