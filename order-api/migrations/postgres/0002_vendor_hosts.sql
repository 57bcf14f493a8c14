-- Vendors are served by hosts: a vendor is known while at least one host serves it, so a
-- host that withdraws a plugin removes only its own row.
CREATE TABLE vendor_hosts (
    vendor          TEXT COLLATE "C" NOT NULL,
    host_id         TEXT NOT NULL,
    display_name    TEXT NOT NULL,
    plugin_version  TEXT NOT NULL,
    first_seen      TEXT COLLATE "C" NOT NULL,
    last_seen       TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (vendor, host_id)
);
INSERT INTO vendor_hosts (vendor, host_id, display_name, plugin_version, first_seen, last_seen)
    SELECT vendor, host_id, display_name, plugin_version, first_seen, last_seen FROM vendors;
DROP TABLE vendors;
