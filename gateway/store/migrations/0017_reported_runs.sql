-- Runs reported by users' own training code (issue 27, gateway/reporting/): a third
-- provenance, and metrics by name beside the epochs' own columns.
--   'REPORTED'  its owner's code measured it and reported it through ReportingService;
--               every number was checked here as a trainer's is: a claim, like an import.
-- Still generated from the document (its `reported` message), so the two cannot disagree.
ALTER TABLE attempts ALTER COLUMN provenance SET EXPRESSION AS (
    CASE WHEN doc -> 'imported' = 'true'::jsonb THEN 'IMPORTED'
         WHEN doc ? 'reported' THEN 'REPORTED'
         ELSE 'TRAINED' END);

-- A metric of one run, by name: its points hang off this row, so each point does not
-- repeat the name (a run of a million points keeps one copy of each of its names).
CREATE TABLE metric_series (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    attempt_id bigint NOT NULL REFERENCES attempts (id) ON DELETE CASCADE,
    key        text   NOT NULL CHECK (key ~ '^[A-Za-z0-9 ._/:-]{1,250}$'),
    -- Points stored so far: what bounds a run's share of the database.
    points     bigint NOT NULL DEFAULT 0,
    UNIQUE (attempt_id, key)
);

-- One point of a metric: exactly once by (series, step), so a batch sent again after
-- a broken stream stores nothing twice.
CREATE TABLE metric_points (
    series_id bigint NOT NULL REFERENCES metric_series (id) ON DELETE CASCADE,
    step      bigint NOT NULL CHECK (step >= 0),
    value     float8 NOT NULL,
    -- When it was measured, in milliseconds since the epoch (as the API carries it).
    at_ms     bigint NOT NULL,
    PRIMARY KEY (series_id, step)
);

-- Reported runs whose reporter went silent, found by the lapse of their lease.
CREATE INDEX attempts_reported_leases ON attempts (lease_until)
    WHERE status = 'TRAINING' AND provenance = 'REPORTED';
