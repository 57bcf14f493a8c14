-- A cancel or delete drops the order's unpublished requests (DELETE FROM outbox WHERE
-- order_id = ...): an index, so that is no scan of the whole outbox.
CREATE INDEX outbox_by_order ON outbox (order_id);
