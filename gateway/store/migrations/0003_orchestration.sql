-- Orchestration: queued work, leases, trainers and artifacts.

-- What a QUEUED (or running) attempt is waiting for, and its lease while a gateway runs it.
ALTER TABLE attempts
    ADD COLUMN work          text        CHECK (work IN ('train', 'test')),
    -- The gateway replica running it, and until when its lease holds without renewal.
    ADD COLUMN leased_by     text        NOT NULL DEFAULT '',
    ADD COLUMN lease_until   timestamptz,
    -- Crashes of the current work; past max_restarts the attempt FAILS.
    ADD COLUMN failures      integer     NOT NULL DEFAULT 0,
    ADD COLUMN queued_at     timestamptz;

-- The queue: claimed oldest first with FOR UPDATE SKIP LOCKED.
CREATE INDEX attempts_queue ON attempts (queued_at, id) WHERE status = 'QUEUED';
-- Expired leases are found without a scan.
CREATE INDEX attempts_leases ON attempts (lease_until) WHERE status IN ('TRAINING', 'TESTING');

-- Trainer daemons, announced by themselves.
CREATE TABLE trainers (
    address        text        PRIMARY KEY,
    capacity       integer     NOT NULL CHECK (capacity > 0),
    devices        jsonb       NOT NULL DEFAULT '[]',
    version        text        NOT NULL DEFAULT '',
    busy_slots     integer     NOT NULL DEFAULT 0,
    registered_at  timestamptz NOT NULL DEFAULT now(),
    last_seen      timestamptz NOT NULL DEFAULT now()
);

-- Checkpoints and final weights, in chunks; only an attempt's newest of each kind is kept.
CREATE TABLE artifacts (
    attempt_id  bigint      NOT NULL REFERENCES attempts (id) ON DELETE CASCADE,
    kind        text        NOT NULL CHECK (kind IN ('checkpoint', 'weights')),
    epoch       integer     NOT NULL,
    chunk       integer     NOT NULL CHECK (chunk >= 0),
    data        bytea       NOT NULL,
    PRIMARY KEY (attempt_id, kind, chunk)
);
-- Tensors barely compress: store them out of line without trying.
ALTER TABLE artifacts ALTER COLUMN data SET STORAGE EXTERNAL;
