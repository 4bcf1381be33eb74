-- The profiler's sweep driven by the writes, not by scans (issue 30): each pass looked
-- for task keys that attempts use and no task row has, by reading every attempt (4.4 s
-- at a million attempts, and the reported runs' another 0.5 s, at most once a second:
-- the database was never idle). Now the attempts' writes note each key they bring that
-- has no task yet, and a pass reads those notes.
--
-- A note is what the sweep's two questions read (store/tasks.py `unseen`, `undeclared`):
-- labels and ops of a key trained, studied or imported (any status but INCOMPLETE: an
-- attempt only created is no task yet), or the owner and declared task of a reported
-- run. It is dropped once the key has a task row (profiled, pending or failed).
CREATE TABLE unseen_task_keys (
    key      text  NOT NULL,
    reported boolean NOT NULL,
    owner    text  NOT NULL DEFAULT '',
    labels   jsonb,
    ops      jsonb,
    task     jsonb,
    noted_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (key, reported)
);

CREATE FUNCTION unseen_task_key_noted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM tasks t WHERE t.key = NEW.task_key) THEN
        RETURN NULL;
    END IF;
    IF NEW.status <> 'INCOMPLETE'
       AND jsonb_typeof(NEW.doc -> 'training_commands' -> 'label_names') = 'array' THEN
        INSERT INTO unseen_task_keys (key, reported, labels, ops)
        VALUES (NEW.task_key, false, NEW.doc -> 'training_commands' -> 'label_names',
                COALESCE(NEW.doc -> 'training_commands' -> 'image_ops', '[]'))
        ON CONFLICT DO NOTHING;
    END IF;
    IF NEW.provenance = 'REPORTED' THEN
        INSERT INTO unseen_task_keys (key, reported, owner, task)
        VALUES (NEW.task_key, true, NEW.owner, NEW.doc -> 'reported' -> 'task')
        ON CONFLICT DO NOTHING;
    END IF;
    RETURN NULL;
END
$$;

-- The WHEN clauses cost no call for the writes that bring no new key: an attempt only
-- created (INCOMPLETE), and every later change of a run's status or numbers.
CREATE TRIGGER attempts_unseen_key_inserted AFTER INSERT ON attempts FOR EACH ROW
    WHEN (NEW.task_key IS NOT NULL
          AND (NEW.status <> 'INCOMPLETE' OR NEW.provenance = 'REPORTED'))
    EXECUTE FUNCTION unseen_task_key_noted();
CREATE TRIGGER attempts_unseen_key_updated AFTER UPDATE OF status, doc, owner ON attempts
    FOR EACH ROW
    WHEN (NEW.task_key IS NOT NULL
          AND ((OLD.status = 'INCOMPLETE' AND NEW.status <> 'INCOMPLETE')
               OR OLD.task_key IS DISTINCT FROM NEW.task_key
               OR OLD.provenance IS DISTINCT FROM NEW.provenance))
    EXECUTE FUNCTION unseen_task_key_noted();

-- What the scans would have found in the store as it is.
INSERT INTO unseen_task_keys (key, reported, labels, ops)
SELECT DISTINCT ON (a.task_key) a.task_key, false,
       a.doc -> 'training_commands' -> 'label_names',
       COALESCE(a.doc -> 'training_commands' -> 'image_ops', '[]')
FROM attempts a
WHERE a.task_key IS NOT NULL AND a.status <> 'INCOMPLETE'
  AND jsonb_typeof(a.doc -> 'training_commands' -> 'label_names') = 'array'
  AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.key = a.task_key)
ORDER BY a.task_key, a.id;

INSERT INTO unseen_task_keys (key, reported, owner, task)
SELECT DISTINCT ON (a.task_key) a.task_key, true, a.owner, a.doc -> 'reported' -> 'task'
FROM attempts a
WHERE a.provenance = 'REPORTED' AND a.task_key IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.key = a.task_key)
ORDER BY a.task_key, a.id;

-- The sweep's other question, tasks whose images changed, from their own few rows.
CREATE INDEX tasks_stale ON tasks (key, id DESC) WHERE stale AND source = 'IMAGES';

-- The curve model's backfill (prognoses for attempts at rest that have epochs and none)
-- looked for them by walking every attempt in id order, every 30 s: now from the few
-- rows that have epochs and no prognosis (a run between its first epoch and prognosis,
-- an import, an attempt from before migration 0011).
CREATE INDEX attempts_without_prognosis ON attempts (id)
    WHERE prognosis_wire IS NULL AND current_epoch > 0;
