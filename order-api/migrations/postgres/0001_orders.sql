-- PostgreSQL: orders, their event log, the outbox of messages still to publish, and the
-- vendors hosts have announced. The same schema and steps as migrations/sqlite, version by
-- version. Ids and timestamps are text, as in SQLite (the store speaks to both through one
-- code path): ids are UUIDs, timestamps RFC 3339 in UTC with 0, 3, 6 or 9 fraction digits,
-- both of which sort as bytes. COLLATE "C" makes every comparison and index bytewise
-- whatever the database's locale.

CREATE TABLE orders (
    id          TEXT COLLATE "C" PRIMARY KEY,  -- UUIDv7: sorts by creation time
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
    created_at  TEXT COLLATE "C" NOT NULL,
    updated_at  TEXT COLLATE "C" NOT NULL
);
CREATE INDEX orders_by_status ON orders (status, id);
CREATE INDEX orders_by_vendor ON orders (vendor, id);

CREATE TABLE order_events (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_id    TEXT COLLATE "C" NOT NULL REFERENCES orders (id),
    at          TEXT COLLATE "C" NOT NULL,
    status      TEXT NOT NULL,                 -- the order's status after the event
    message     TEXT NOT NULL,
    attempt     BIGINT                         -- which delivery of the request, from the host
);
CREATE INDEX order_events_by_order ON order_events (order_id, id);

-- Written in the same transaction as the order; deleted once the broker confirmed it.
CREATE TABLE outbox (
    message_id      TEXT COLLATE "C" PRIMARY KEY,
    order_id        TEXT COLLATE "C" NOT NULL REFERENCES orders (id),
    routing_key     TEXT NOT NULL,
    body            BYTEA NOT NULL,
    traceparent     TEXT,
    created_at      TEXT COLLATE "C" NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at TEXT COLLATE "C" NOT NULL,
    last_error      TEXT
);
CREATE INDEX outbox_due ON outbox (next_attempt_at);

CREATE TABLE vendors (
    vendor          TEXT PRIMARY KEY,
    display_name    TEXT NOT NULL,
    plugin_version  TEXT NOT NULL,
    host_id         TEXT NOT NULL,
    first_seen      TEXT COLLATE "C" NOT NULL,
    last_seen       TEXT COLLATE "C" NOT NULL
);
