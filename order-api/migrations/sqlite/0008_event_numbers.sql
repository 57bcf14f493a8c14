-- Each order's events are numbered 1, 2, 3 ... of their own (`seq`): the SSE id a stream
-- sends and takes back as Last-Event-ID. The table's `id` is one sequence for every order,
-- so it told a tenant how busy the others were. Existing events are numbered in the order of
-- their ids. A new event's number is one more than its order's last, written under the
-- order's lock (one writer at a time on SQLite); the unique index refuses a repeat.
-- (SQLite adds a NOT NULL column only with a default; every insert gives the number.)

ALTER TABLE order_events ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;
UPDATE order_events SET seq = (
    SELECT COUNT(*) FROM order_events AS earlier
    WHERE earlier.order_id = order_events.order_id AND earlier.id <= order_events.id
);
CREATE UNIQUE INDEX order_events_by_order_seq ON order_events (order_id, seq);
