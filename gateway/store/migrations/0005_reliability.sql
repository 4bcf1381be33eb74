-- Reliability: a fencing token of its own, and lost leases counted apart from failures.

-- The fencing token: incremented at every claim. `restart_count` had been both; it now
-- means only what the API says (restarts after a failure or a lost run).
ALTER TABLE attempts ADD COLUMN claims integer NOT NULL DEFAULT 0;
UPDATE attempts SET claims = restart_count;
-- Runs lost with their gateway (its lease lapsed): not the command's fault, so not
-- counted against max_restarts, but bounded too, so a poison attempt still ends.
ALTER TABLE attempts ADD COLUMN lost_leases integer NOT NULL DEFAULT 0;
-- When its current (or last) run was claimed: with `updated_at` at its end, the time a
-- trainer's slot stood idle between two runs (the hand-over) can be read off the store.
ALTER TABLE attempts ADD COLUMN claimed_at timestamptz;

-- A trainer that refused work (every slot busy) is not claimed for again before this.
ALTER TABLE trainers ADD COLUMN backoff_until timestamptz;

-- Calls already carried out, by the caller's request_id (AIP-155): a retry returns the
-- attempt the first call made instead of doing it again. Kept a day.
CREATE TABLE requests (
    principal  text        NOT NULL,
    request_id text        NOT NULL,
    method     text        NOT NULL,
    attempt_id bigint      NOT NULL REFERENCES attempts (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (principal, request_id)
);
CREATE INDEX requests_created ON requests (created_at);
