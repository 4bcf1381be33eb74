-- Tasks declared by runs reported from users' own code (issue 27, docs/architecture.md
-- §11): such a run's task is what it declares (a dataset's name and its classes), not
-- labels of images held here, so its key is made from the declaration.
--
-- Each owner's declarations are tasks of their own: "cifar10" declared by two owners is
-- two tasks (near each other once profiled), so no one can change the profile that
-- another owner's runs are compared by. The key cannot be mistaken for a command's: a
-- command's key starts with its labels' JSON array, this one with "declared ".
-- Owner names and dataset names hold no spaces (the one name rule; DeclaredTask), so the
-- parts cannot run into each other.
CREATE FUNCTION declared_task_key(owner text, task jsonb) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN jsonb_typeof(task) = 'object'
             AND (COALESCE(task ->> 'dataset', '') <> ''
                  OR jsonb_array_length(CASE WHEN jsonb_typeof(task -> 'labels') = 'array'
                                             THEN task -> 'labels' ELSE '[]'::jsonb END) > 0)
        THEN 'declared ' || owner || ' ' || COALESCE(task ->> 'dataset', '') || ' '
             || task_key(task -> 'labels', '[]'::jsonb)
    END
$$;

ALTER TABLE attempts ALTER COLUMN task_key SET EXPRESSION AS (
    CASE WHEN doc ? 'reported' THEN declared_task_key(owner, doc -> 'reported' -> 'task')
         ELSE task_key(doc -> 'training_commands' -> 'label_names',
                       doc -> 'training_commands' -> 'image_ops') END);

-- Where a task version's profile comes from:
--   'IMAGES'    its labels' images held here (every task before this migration);
--   'SAMPLE'    a sample of its images a reporter sent (UploadTaskSample), profiled by
--               a trainer as images held here are;
--   'DECLARED'  only what its runs declared: READY at once, with those features alone.
-- A key's profile is its newest READY version from images or a sample, else its newest
-- declared one (store/tasks.py, store/curves.py).
ALTER TABLE tasks
    ADD COLUMN source  text  NOT NULL DEFAULT 'IMAGES'
                             CHECK (source IN ('IMAGES', 'SAMPLE', 'DECLARED')),
    ADD COLUMN owner   text  NOT NULL DEFAULT '',
    ADD COLUMN dataset text  NOT NULL DEFAULT '',
    -- The serialized TaskSample a SAMPLE version is profiled from (at most 8 MiB).
    ADD COLUMN sample  bytea,
    ADD CONSTRAINT tasks_sample_source CHECK ((source = 'SAMPLE') = (sample IS NOT NULL));

-- A prognosis holds a run to its task's best finished run (store/curves.py), and a task
-- shows its finished runs' count and best (store/tasks.py): read from the task's finished
-- runs alone, newest first. Every reported run of a declared task
-- now has a key, and a thousand running ones of one task were each read (by the hash
-- index on the key) for every epoch of each. The md5: a key may be longer than a B-tree
-- entry (migration 0014).
CREATE INDEX attempts_finished_by_task ON attempts (md5(task_key), id DESC)
    WHERE status IN ('TRAINED', 'COMPLETE');
