-- Webhooks: an order may name a URL that is called when it settles (active, failed, deleted,
-- cancelled). Deliveries are queued in the same transaction as the state change that causes
-- them, and retried until the receiver answers 2xx or the attempts run out.
ALTER TABLE orders ADD COLUMN webhook_url TEXT;

-- Each tenant's signing secret (`whsec_` + base64 of 32 random bytes): the receiver checks
-- the `webhook-signature` with it (Standard Webhooks: HMAC-SHA256 of "id.timestamp.body").
CREATE TABLE webhook_secrets (
    tenant      TEXT PRIMARY KEY NOT NULL,
    secret      TEXT NOT NULL,
    created_at  TEXT NOT NULL
);

CREATE TABLE webhook_deliveries (
    delivery_id     TEXT PRIMARY KEY NOT NULL,  -- the `webhook-id`, the same on every attempt
    order_id        TEXT NOT NULL REFERENCES orders (id),
    tenant          TEXT NOT NULL,
    url             TEXT NOT NULL,
    payload         TEXT NOT NULL,              -- JSON, signed as is
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL,
    last_error      TEXT,
    delivered_at    TEXT,
    failed_at       TEXT,
    created_at      TEXT NOT NULL
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE delivered_at IS NULL AND failed_at IS NULL;
