-- A task's key holds all of its labels: a command of a few hundred long labels makes
-- a key longer than a B-tree entry may be (about 2.7 kB), and the database refused to
-- store such an attempt at all. The key is only ever looked up by equality, which a
-- hash index serves at any length (it keeps a 4-byte hash per row).
DROP INDEX attempts_task_key;
CREATE INDEX attempts_task_key ON attempts USING hash (task_key);
DROP INDEX tasks_key;
CREATE INDEX tasks_key ON tasks USING hash (key);
