-- Fallback across vendors and regions: an order's `placement` (JSON list of {vendor, region,
-- size, image} candidates, on the order row of an order kept as a fleet) and each move of one
-- of its servers to the next candidate (see order-api/src/store/fleets.rs).
ALTER TABLE orders ADD COLUMN placement TEXT;

CREATE TABLE placement_moves (
    member_id    TEXT PRIMARY KEY NOT NULL,  -- the server's order at the next candidate
    from_member  TEXT NOT NULL,              -- its order at the candidate that failed
    reason       TEXT NOT NULL,              -- the fault code that moved it
    at           TEXT COLLATE "C" NOT NULL,
    waiting      BIGINT NOT NULL             -- 1 while its create waits for the clean-up
);
CREATE INDEX placement_moves_by_from ON placement_moves (from_member);
