-- PRUNED: a study's pruner stopped the attempt early (its epochs are kept).
ALTER TABLE attempts DROP CONSTRAINT attempts_status_check;
ALTER TABLE attempts ADD CONSTRAINT attempts_status_check CHECK (status IN (
    'INCOMPLETE', 'QUEUED', 'TRAINING', 'TRAINED', 'TESTING', 'COMPLETE', 'FAILED',
    'CANCELLED', 'PRUNED'));
