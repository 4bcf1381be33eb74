-- A caller's own tasks that count only for it are every READY task not of images held
-- here (declared by its runs, or a sample it uploaded: `TaskStore.ready`), not only the
-- declared ones 0026 indexed (`TaskStore.own_claims`).
DROP INDEX IF EXISTS tasks_declared_by;
CREATE INDEX tasks_own_by ON tasks (owner) WHERE source <> 'IMAGES' AND state = 'READY';
