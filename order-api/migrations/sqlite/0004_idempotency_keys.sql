-- Idempotency-Key on POST /v1/orders: a key names the one order it created; a retry with the
-- same key and the same body gets that order back instead of a second one. The request's
-- SHA-256 (of its parsed body) tells a retry from a different request reusing the key.
CREATE TABLE idempotency_keys (
    key TEXT PRIMARY KEY NOT NULL,
    request_sha256 TEXT NOT NULL,
    order_id TEXT NOT NULL REFERENCES orders (id) DEFERRABLE INITIALLY DEFERRED,
    created_at TEXT NOT NULL
);
