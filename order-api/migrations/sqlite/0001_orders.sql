-- Orders, their event log, the outbox of messages still to publish, and the vendors
-- hosts have announced.

CREATE TABLE orders (
    id          TEXT PRIMARY KEY NOT NULL,     -- UUIDv7: sorts by creation time
    status      TEXT NOT NULL,
    vendor      TEXT NOT NULL,
    region      TEXT NOT NULL,
    size        TEXT NOT NULL,
    image       TEXT NOT NULL,
    name        TEXT NOT NULL,
    ssh_keys    TEXT NOT NULL,                 -- JSON array
    user_data   TEXT,
    labels      TEXT NOT NULL,                 -- JSON object
    server      TEXT,                          -- JSON ServerInfo, once the vendor made one
    fault       TEXT,                          -- JSON Fault, when failed
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE INDEX orders_by_status ON orders (status, id);
CREATE INDEX orders_by_vendor ON orders (vendor, id);

CREATE TABLE order_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    order_id    TEXT NOT NULL REFERENCES orders (id),
    at          TEXT NOT NULL,
    status      TEXT NOT NULL,                 -- the order's status after the event
    message     TEXT NOT NULL,
    attempt     INTEGER                        -- which delivery of the request, from the host
);
CREATE INDEX order_events_by_order ON order_events (order_id, id);

-- Written in the same transaction as the order; deleted once the broker confirmed it.
CREATE TABLE outbox (
    message_id      TEXT PRIMARY KEY NOT NULL,
    order_id        TEXT NOT NULL REFERENCES orders (id),
    routing_key     TEXT NOT NULL,
    body            BLOB NOT NULL,
    traceparent     TEXT,
    created_at      TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL,
    last_error      TEXT
);
CREATE INDEX outbox_due ON outbox (next_attempt_at);

CREATE TABLE vendors (
    vendor          TEXT PRIMARY KEY NOT NULL,
    display_name    TEXT NOT NULL,
    plugin_version  TEXT NOT NULL,
    host_id         TEXT NOT NULL,
    first_seen      TEXT NOT NULL,
    last_seen       TEXT NOT NULL
);
