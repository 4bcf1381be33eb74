-- Studies of Optuna's own clients (issue 28, gateway/optuna/): `metalearn.optuna.Storage`
-- and Optuna's gRPC storage protocol. Their samplers and pruners run in the clients'
-- processes; the study and its trials are held here, as a study and attempts like any
-- other (study show, the dashboard, filters, compare).

-- Its objectives' directions (NULL: a study metalearn drives itself, which has one
-- objective of its own), and Optuna's attributes as its protocol carries them: each
-- value the JSON text of it (Python's json may write NaN, which jsonb cannot hold).
ALTER TABLE studies ADD COLUMN directions text[]
    CHECK (directions <@ ARRAY['MINIMIZE', 'MAXIMIZE'] AND cardinality(directions) >= 1);
ALTER TABLE studies ADD COLUMN user_attrs jsonb NOT NULL DEFAULT '{}';
ALTER TABLE studies ADD COLUMN system_attrs jsonb NOT NULL DEFAULT '{}';

-- Metalearn's driver runs only the studies it samples for.
DROP INDEX studies_active;
CREATE INDEX studies_active ON studies (id) WHERE state <> 'DONE' AND directions IS NULL;

-- A trial's id in Optuna's protocol (every trial has one; only Optuna's clients use it).
ALTER TABLE study_trials ADD COLUMN id bigint GENERATED ALWAYS AS IDENTITY UNIQUE;
-- An Optuna client's trial keeps its own state and values, as the client set them (NULL:
-- the trial's state is read from its attempt, as for the trials metalearn runs). Its
-- parameters are `params` (as the objective saw them) and `internal` (as the sampler
-- holds them), beside their distributions (Optuna's JSON of each); its intermediate
-- values are its attempt's metric `intermediate_value`.
ALTER TABLE study_trials ADD COLUMN state text
    CHECK (state IN ('WAITING', 'RUNNING', 'COMPLETE', 'PRUNED', 'FAIL'));
ALTER TABLE study_trials ADD COLUMN distributions jsonb NOT NULL DEFAULT '{}';
ALTER TABLE study_trials ADD COLUMN vals float8[];
ALTER TABLE study_trials ADD COLUMN user_attrs jsonb NOT NULL DEFAULT '{}';
ALTER TABLE study_trials ADD COLUMN system_attrs jsonb NOT NULL DEFAULT '{}';
ALTER TABLE study_trials ADD COLUMN started_at timestamptz;
ALTER TABLE study_trials ADD COLUMN completed_at timestamptz;
-- A client reads a study's trials from the first it has not seen finished.
CREATE INDEX study_trials_by_id ON study_trials (study_id, id);
