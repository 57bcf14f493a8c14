-- Vendors a host has a plugin for but cannot serve (a secret is missing, the plugin does not
-- load), one row per host, with the host's reason: listed to admins in GET /v1/vendors,
-- never to tenants, and never a reason to accept the vendor's orders (only vendor_hosts is).
-- A host's announcement of the vendor, or its plain withdrawal, removes its row.
CREATE TABLE vendor_unavailable (
    vendor      TEXT NOT NULL,
    host_id     TEXT NOT NULL,
    reason      TEXT NOT NULL,
    since       TEXT NOT NULL,
    last_seen   TEXT NOT NULL,
    PRIMARY KEY (vendor, host_id)
);
