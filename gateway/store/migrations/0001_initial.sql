-- Attempts: one row each; the client's commands and the results live in `doc`.
CREATE TABLE attempts (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name          text        NOT NULL UNIQUE CHECK (name ~ '^[A-Za-z0-9._-]{1,128}$'),
    status        text        NOT NULL DEFAULT 'INCOMPLETE' CHECK (status IN (
                      'INCOMPLETE', 'QUEUED', 'TRAINING', 'TRAINED', 'TESTING',
                      'COMPLETE', 'FAILED', 'CANCELLED')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    current_epoch integer     NOT NULL DEFAULT 0,
    -- The fencing token of the lease: a trainer's writes carry the count it started at.
    restart_count integer     NOT NULL DEFAULT 0,
    trainer       text        NOT NULL DEFAULT '',
    error         text        NOT NULL DEFAULT '',
    doc           jsonb       NOT NULL
);

CREATE INDEX attempts_status ON attempts (status, id);
CREATE INDEX attempts_updated ON attempts (updated_at DESC, id DESC);
CREATE INDEX attempts_accuracy ON attempts ((COALESCE((doc ->> 'accuracy')::float8, -1)) DESC, id);
CREATE INDEX attempts_label_names ON attempts USING gin ((doc -> 'training_commands' -> 'label_names'));

-- One row per finished epoch: appending is O(1) and a replayed epoch is a no-op.
CREATE TABLE attempt_epochs (
    attempt_id         bigint      NOT NULL REFERENCES attempts (id) ON DELETE CASCADE,
    epoch              integer     NOT NULL CHECK (epoch > 0),
    loss               float8      NOT NULL,
    learning_rate      float8      NOT NULL DEFAULT 0,
    seconds            float8      NOT NULL DEFAULT 0,
    samples_per_second float8      NOT NULL DEFAULT 0,
    val_loss           float8      NOT NULL DEFAULT 0,
    val_accuracy       float8      NOT NULL DEFAULT 0,
    recorded_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (attempt_id, epoch)
);

-- Labelled images, deduplicated by content within a label.
CREATE TABLE images (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    label      text        NOT NULL,
    sha256     bytea       NOT NULL CHECK (length(sha256) = 32),
    format     text        NOT NULL,
    width      integer     NOT NULL,
    height     integer     NOT NULL,
    size_bytes integer     NOT NULL,
    data       bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (label, sha256)
);
-- Image files are compressed already: store them out of line without another try.
ALTER TABLE images ALTER COLUMN data SET STORAGE EXTERNAL;
