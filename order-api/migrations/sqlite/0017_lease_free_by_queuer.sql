-- The lease-free mark of an order's first creation request names the order-api that queued
-- it: its store's incarnation, a random id made when it starts. Only that store sends the
-- mark, on the first read of the row it makes, which it remembers for as long as it runs;
-- after a restart (a new incarnation), another order-api's claim, or a second read, the row
-- goes out without the mark and takes the lease. So clearing the mark needs no write of its
-- own before the publish any more. A row marked under the old scheme (lease_free = 1) loses
-- the mark: its create takes the lease, which is always safe.
ALTER TABLE outbox ADD COLUMN lease_free_by TEXT;
ALTER TABLE outbox DROP COLUMN lease_free;
