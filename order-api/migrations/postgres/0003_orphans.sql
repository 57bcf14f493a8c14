-- The orphan sweep: servers at a vendor carrying our idempotency key that no order owns,
-- and the latest sweep of each vendor.

CREATE TABLE orphans (
    vendor          TEXT NOT NULL,
    vendor_id       TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    server          TEXT NOT NULL,              -- JSON ServerInfo, as last listed
    reason          TEXT NOT NULL,              -- why no order owns it
    state           TEXT NOT NULL,              -- reported | deleting | deleted | delete_failed | gone
    detail          TEXT,                       -- the failed delete's fault, as JSON
    first_seen_at   TEXT COLLATE "C" NOT NULL,
    last_seen_at    TEXT COLLATE "C" NOT NULL,
    updated_at      TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (vendor, vendor_id)
);

CREATE TABLE sweeps (
    vendor          TEXT COLLATE "C" PRIMARY KEY,
    sweep_id        TEXT NOT NULL,              -- the sweep asked for last; older answers are ignored
    requested_at    TEXT COLLATE "C" NOT NULL,
    finished_at     TEXT COLLATE "C",
    host_id         TEXT,
    outcome         TEXT,                       -- listed | unsupported | failed
    detail          TEXT,                       -- why unsupported or failed
    listed          BIGINT,                     -- servers carrying our key
    orphans         BIGINT                      -- of which no order owns
);
