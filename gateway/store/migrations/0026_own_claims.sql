-- Whether a caller's own claims (runs it imported or reported, tasks it declared) make
-- what it learns from differ from what every caller shares (`TaskStore.own_claims`): a
-- caller with none learns from the same history as everyone, and shares its ranking's
-- fit (a minute of reads and CPU at a million attempts) instead of paying for its own.
CREATE INDEX task_history_claims ON task_history (owner)
    WHERE provenance <> 'TRAINED' AND runs > 0;
CREATE INDEX tasks_declared_by ON tasks (owner)
    WHERE source = 'DECLARED' AND state = 'READY';
