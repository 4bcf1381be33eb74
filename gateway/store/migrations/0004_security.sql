-- Security: principals' tokens, attempt owners, trainers bound to a principal,
-- quarantine of trainers that lied, and artifacts streamed in before they count.

-- One bearer token per principal. Only its sha256 is kept: tokens are 256 random
-- bits, so a fast hash is as good as a slow one and costs nothing per call.
CREATE TABLE tokens (
    name        text        PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9._-]{1,64}$'),
    token_hash  bytea       NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    role        text        NOT NULL CHECK (role IN ('reader', 'writer', 'admin', 'trainer')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz,
    created_by  text        NOT NULL DEFAULT ''
);

-- The principal that created an attempt ('' for attempts from before tokens).
ALTER TABLE attempts ADD COLUMN owner text NOT NULL DEFAULT '';
CREATE INDEX attempts_owner ON attempts (owner, id);

ALTER TABLE trainers
    -- The principal whose token registered the trainer: only it may heartbeat or
    -- re-register that address, and read the images of the work it holds.
    ADD COLUMN principal         text        NOT NULL DEFAULT '',
    -- What the gateway presents on its calls to the trainer (it answers no other).
    ADD COLUMN credential        text        NOT NULL DEFAULT '',
    -- A trainer that streamed something impossible gets no work until then.
    ADD COLUMN quarantined_until timestamptz,
    ADD COLUMN quarantine_reason text        NOT NULL DEFAULT '';

-- A file arriving from a trainer is written chunk by chunk as an upload, and
-- becomes the attempt's checkpoint or weights only once its sha256 checks out.
ALTER TABLE artifacts DROP CONSTRAINT artifacts_kind_check;
ALTER TABLE artifacts ADD CONSTRAINT artifacts_kind_check CHECK (
    kind IN ('checkpoint', 'weights', 'checkpoint.upload', 'weights.upload'));
