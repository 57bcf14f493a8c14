-- Messages that reached the dead-letter queue (provision.dead), recorded by order-api and
-- then acked there, so operators read them with the reason (GET /v1/dead-letters) instead of
-- a broker tool, and nothing is lost by reading. A redelivered copy of a message already
-- recorded (order-api stopped between the commit and the ack) has the same fingerprint and
-- is recorded once. An operator dismisses an entry once dealt with (DELETE).
CREATE TABLE dead_letters (
    id           TEXT PRIMARY KEY,          -- UUIDv7: sorts by recording time
    fingerprint  TEXT NOT NULL UNIQUE,      -- SHA-256 of what identifies the message
    recorded_at  TEXT NOT NULL,
    queue        TEXT,                      -- the queue it was refused on, when known
    reason       TEXT NOT NULL,
    exchange     TEXT NOT NULL,
    routing_key  TEXT NOT NULL,
    message_id   TEXT,
    order_id     TEXT,                      -- the order its body names, if any
    headers      TEXT NOT NULL,             -- JSON object
    body         BLOB NOT NULL
);
