-- Curves (issue 14): every attempt's prognosis, and the learned curve model's versions.

-- The newest prognosis: serialized (what the API returns) and in a small JSON form that
-- ListAttempts filters read ({"epoch", "flags": ["AT_CHANCE", ...], "hopeless",
-- "final_val_accuracy", "final_val_accuracy_low", "final_val_accuracy_high"}).
ALTER TABLE attempts ADD COLUMN prognosis_wire bytea;
ALTER TABLE attempts ADD COLUMN prognosis jsonb;
CREATE INDEX attempts_prognosis ON attempts USING gin (prognosis jsonb_path_ops);

-- One row per fit; the newest is used. `model` is the pickled scikit-learn model this
-- gateway fitted (only the gateway writes here).
CREATE TABLE curve_models (
    version     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    fitted_at   timestamptz NOT NULL DEFAULT now(),
    attempts    integer     NOT NULL,
    tasks       integer     NOT NULL,
    quality     jsonb       NOT NULL,
    seconds     float8      NOT NULL,
    model       bytea       NOT NULL
);
