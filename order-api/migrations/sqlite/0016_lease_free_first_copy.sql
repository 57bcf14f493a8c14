-- An order's first creation request may be created without the create lease on its first
-- publish only (the host's worker::first_copy): 1 on the row the order's acceptance wrote,
-- cleared by the relay when it takes the row for its first publish, so a re-publish (a lost
-- confirm, a relay that died, another order-api's claim after this one's expired) goes out
-- without the mark and takes the lease. Rows written later (the watchdog's, a move's) are 0.
ALTER TABLE outbox ADD COLUMN lease_free INTEGER NOT NULL DEFAULT 0;
