-- What learning knows of each task's history, kept by the writes (issue 30): FindSimilarTasks
-- and SuggestCommand read every finished run to learn which tasks have history and how
-- far it is evidence (a row per run: 650,000 rows and seconds of parsing at a million
-- attempts, beyond a request's budget). Now they read one row per task, provenance and
-- owner, and a task's runs only when its commands are what they need.
--
-- A run counts (as `TaskStore.evaluations` reads it) when it finished (TRAINED or
-- COMPLETE), has a validation accuracy in 0..1 and a task key. `owner` is '' for runs
-- trained here: whoever owns them, every caller learns from them (`trusted_run`).
-- `version` takes the next value of one sequence at every change of the row, so that a
-- reader keeps what it read of a task (and of the whole table) until it moves.
CREATE SEQUENCE task_history_version;

CREATE TABLE task_history (
    task_key text NOT NULL,
    provenance text NOT NULL,
    owner text NOT NULL,
    runs bigint NOT NULL,
    newest_id bigint,
    version bigint NOT NULL DEFAULT nextval('task_history_version'),
    PRIMARY KEY (task_key, provenance, owner)
);
CREATE INDEX task_history_version_idx ON task_history (version);

-- Adds `delta` runs to a (task, provenance, owner) row. A removal recomputes the newest
-- run from the task's finished runs (their index, newest first: migration 0018).
CREATE FUNCTION task_history_add(k text, p text, o text, delta int, run_id bigint)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    who text := CASE WHEN p = 'TRAINED' THEN '' ELSE o END;
BEGIN
    IF delta > 0 THEN
        INSERT INTO task_history AS h (task_key, provenance, owner, runs, newest_id)
        VALUES (k, p, who, delta, run_id)
        ON CONFLICT (task_key, provenance, owner) DO UPDATE
        SET runs = h.runs + delta, newest_id = GREATEST(h.newest_id, run_id),
            version = nextval('task_history_version');
    ELSE
        UPDATE task_history h SET runs = h.runs + delta,
            newest_id = (SELECT max(a.id) FROM attempts a
                         WHERE md5(a.task_key) = md5(k) AND a.task_key = k
                           AND a.status IN ('TRAINED', 'COMPLETE')
                           AND a.best_val_accuracy BETWEEN 0 AND 1 AND a.provenance = p
                           AND (p = 'TRAINED' OR a.owner = o)),
            version = nextval('task_history_version')
        WHERE h.task_key = k AND h.provenance = p AND h.owner = who;
    END IF;
END
$$;

CREATE FUNCTION task_history_counts(status text, best float8, k text) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT status IN ('TRAINED', 'COMPLETE') AND best BETWEEN 0 AND 1 AND k IS NOT NULL
$$;

CREATE FUNCTION task_history_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE')
       AND task_history_counts(OLD.status, OLD.best_val_accuracy, OLD.task_key) THEN
        PERFORM task_history_add(OLD.task_key, OLD.provenance, OLD.owner, -1, OLD.id);
    END IF;
    IF TG_OP IN ('UPDATE', 'INSERT')
       AND task_history_counts(NEW.status, NEW.best_val_accuracy, NEW.task_key) THEN
        PERFORM task_history_add(NEW.task_key, NEW.provenance, NEW.owner, 1, NEW.id);
    END IF;
    RETURN NULL;
END
$$;

-- Row triggers whose WHEN costs no call for the writes that do not concern learning (a
-- queued attempt created, a running one's epochs); an update of a counted run's best
-- (validated again) bumps its task's version, since its mean value moved.
CREATE TRIGGER attempts_task_history_inserted AFTER INSERT ON attempts FOR EACH ROW
    WHEN (NEW.status IN ('TRAINED', 'COMPLETE'))
    EXECUTE FUNCTION task_history_changed();
CREATE TRIGGER attempts_task_history_updated
    AFTER UPDATE OF status, best_val_accuracy, doc, owner, provenance ON attempts FOR EACH ROW
    WHEN ((OLD.status IN ('TRAINED', 'COMPLETE') OR NEW.status IN ('TRAINED', 'COMPLETE'))
          AND (OLD.status, OLD.best_val_accuracy, OLD.task_key, OLD.owner, OLD.provenance)
              IS DISTINCT FROM
              (NEW.status, NEW.best_val_accuracy, NEW.task_key, NEW.owner, NEW.provenance))
    EXECUTE FUNCTION task_history_changed();
CREATE TRIGGER attempts_task_history_deleted AFTER DELETE ON attempts FOR EACH ROW
    WHEN (OLD.status IN ('TRAINED', 'COMPLETE'))
    EXECUTE FUNCTION task_history_changed();

INSERT INTO task_history (task_key, provenance, owner, runs, newest_id)
SELECT task_key, provenance, CASE WHEN provenance = 'TRAINED' THEN '' ELSE owner END,
       count(*), max(id)
FROM attempts
WHERE task_history_counts(status, best_val_accuracy, task_key)
GROUP BY 1, 2, 3;
