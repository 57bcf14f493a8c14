-- An order's events are read by their number (`order_events_by_order_seq`, migration 0008):
-- nothing reads them by `id` within an order any more, and the unique index on
-- (order_id, seq) serves the per-order lookups (the next number, a stream's events, the
-- foreign key's look-ups) as well. The index on (order_id, id) was one more B-tree written on
-- every event of every order, for no reader.
DROP INDEX IF EXISTS order_events_by_order;
