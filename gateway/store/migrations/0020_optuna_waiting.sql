-- Whether an Optuna study has trials waiting (enqueued, not yet taken): every new trial
-- of a worker answers it (gateway/optuna/servicer.py), so that a worker need not read
-- the study's waiting trials before each trial. A study holds few waiting trials at a
-- time and many others: a partial index keeps the answer one probe.
CREATE INDEX study_trials_waiting ON study_trials (study_id) WHERE state = 'WAITING';
