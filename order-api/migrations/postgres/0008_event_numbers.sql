-- Each order's events are numbered 1, 2, 3 ... of their own (`seq`): the SSE id a stream
-- sends and takes back as Last-Event-ID. The table's `id` is one sequence for every order,
-- so it told a tenant how busy the others were. Existing events are numbered in the order of
-- their ids. A new event's number is one more than its order's last, written under the
-- order's row lock; the unique index refuses a repeat.

ALTER TABLE order_events ADD COLUMN seq BIGINT;
UPDATE order_events SET seq = numbered.seq
FROM (
    SELECT id, row_number() OVER (PARTITION BY order_id ORDER BY id) AS seq FROM order_events
) AS numbered
WHERE order_events.id = numbered.id;
ALTER TABLE order_events ALTER COLUMN seq SET NOT NULL;
CREATE UNIQUE INDEX order_events_by_order_seq ON order_events (order_id, seq);

-- Every instance's live streams hear of an order's new events, whichever instance wrote
-- them: NOTIFY order_events with the order's id, delivered when the transaction commits
-- (and never if it rolls back). An order's first event needs none: no stream can follow an
-- order before it is committed.
CREATE FUNCTION notify_order_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('order_events', NEW.order_id);
    RETURN NULL;
END
$$;
CREATE TRIGGER order_events_notify AFTER INSERT ON order_events
    FOR EACH ROW WHEN (NEW.seq > 1) EXECUTE FUNCTION notify_order_event();
