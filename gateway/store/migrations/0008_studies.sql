-- Studies: searches over training commands. Each trial is an attempt; this is only what
-- an attempt cannot hold: the study, and each trial's sampled values and the sampler's
-- state (Optuna's system attributes, JSON) that the next ask needs.
CREATE TABLE studies (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text        NOT NULL UNIQUE CHECK (name ~ '^[A-Za-z0-9._-]{1,100}$'),
    owner       text        NOT NULL,
    -- The client's fields of the Study message, serialized (the search, as asked).
    spec        bytea       NOT NULL,
    state       text        NOT NULL DEFAULT 'RUNNING'
                            CHECK (state IN ('RUNNING', 'STOPPING', 'DONE')),
    trials_made integer     NOT NULL DEFAULT 0,
    stop_reason text        NOT NULL DEFAULT '',
    sampler_state jsonb     NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX studies_active ON studies (id) WHERE state <> 'DONE';

CREATE TABLE study_trials (
    study_id      bigint  NOT NULL REFERENCES studies (id) ON DELETE CASCADE,
    number        integer NOT NULL CHECK (number >= 0),
    -- NULL until queued (a trial is asked, committed, then queued), or once deleted.
    attempt_id    bigint  REFERENCES attempts (id) ON DELETE SET NULL,
    queued        boolean NOT NULL DEFAULT false,
    -- Sampled values by path, as the command got them.
    params        jsonb   NOT NULL,
    -- The same values as Optuna holds them (a JSON choice as its canonical text).
    internal      jsonb   NOT NULL,
    sampler_state jsonb   NOT NULL DEFAULT '{}',
    -- Why it could not be queued (then it counts as failed).
    error         text    NOT NULL DEFAULT '',
    PRIMARY KEY (study_id, number)
);
CREATE INDEX study_trials_attempt ON study_trials (attempt_id);
