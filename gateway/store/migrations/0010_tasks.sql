-- Tasks (issue 13): what a command trains on, profiled once by a trainer, and the
-- distance between tasks that metalearn learns from its history.

-- A task's key: its labels (distinct, sorted) and image operations, as one text. An
-- attempt and a task are matched by it; it is the same whatever order the labels come
-- in. Written in SQL so that the attempts' generated column and the gateway's lookups
-- cannot disagree; sorted bytewise (COLLATE "C"), so no locale or glibc upgrade can
-- change a stored key.
CREATE FUNCTION task_key(labels jsonb, ops jsonb) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT COALESCE((SELECT jsonb_agg(x ORDER BY x COLLATE "C") FROM (
                        SELECT DISTINCT x FROM jsonb_array_elements_text(
                            CASE WHEN jsonb_typeof(labels) = 'array' THEN labels
                                 ELSE '[]'::jsonb END) AS t(x)) AS d), '[]'::jsonb)::text
           || ' ' || COALESCE(NULLIF(ops, 'null'::jsonb), '[]'::jsonb)::text
$$;

ALTER TABLE attempts ADD COLUMN task_key text GENERATED ALWAYS AS (
    task_key(doc -> 'training_commands' -> 'label_names',
             doc -> 'training_commands' -> 'image_ops')) STORED;
CREATE INDEX attempts_task_key ON attempts (task_key, id);

-- One row per task version: a new upload or deletion among its labels' images makes
-- the next look at it compute a new fingerprint, and so a new row (the old one stays,
-- with the profile of the images it had).
CREATE TABLE tasks (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    fingerprint   text        NOT NULL UNIQUE,
    key           text        NOT NULL,
    label_names   jsonb       NOT NULL,
    image_ops     jsonb       NOT NULL,
    state         text        NOT NULL DEFAULT 'PENDING'
                              CHECK (state IN ('PENDING', 'READY', 'FAILED')),
    -- The serialized TaskProfile, and its features again as JSON (queryable).
    profile       bytea,
    features      jsonb,
    error         text        NOT NULL DEFAULT '',
    -- Images of its labels changed since the fingerprint was taken: look again.
    stale         boolean     NOT NULL DEFAULT false,
    -- A gateway profiling it holds it until then; tries so far. The trainer asked to
    -- profile it (its address) may read its labels' images meanwhile.
    claimed_until timestamptz,
    trainer       text        NOT NULL DEFAULT '',
    tries         integer     NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL DEFAULT now(),
    profiled_at   timestamptz
);
CREATE INDEX tasks_key ON tasks (key, id DESC);
CREATE INDEX tasks_pending ON tasks (id) WHERE state = 'PENDING';
CREATE INDEX tasks_labels ON tasks USING gin (label_names);

-- The learned distance between tasks (one row), refitted on request or when studies
-- have finished since.
CREATE TABLE task_distance (
    id          integer     PRIMARY KEY CHECK (id = 1),
    kind        text        NOT NULL,
    model       jsonb       NOT NULL,
    studies_done integer    NOT NULL,
    fitted_at   timestamptz NOT NULL DEFAULT now()
);

-- Warm-started studies: what the warm start found (NULL until planned), and for each
-- zero-shot trial the past attempt whose command it repeats.
ALTER TABLE studies ADD COLUMN warm_plan jsonb;
ALTER TABLE study_trials ADD COLUMN seeded_by bigint REFERENCES attempts (id) ON DELETE SET NULL;
