-- `Attempt.best_val_accuracy` stored with the attempt (issue 30): filtering and ordering
-- by it read every listed attempt's epochs (124 ms a page at 10,000 attempts, growing
-- with the store). Now it is a column, kept by the epoch writes themselves, and indexed
-- both ways for `order_by_field = "best_val_accuracy [desc]"`.
--
-- The value is what the API has always said: the largest validation accuracy of the
-- attempt's epochs, NULL where there is none or it is 0 (no epoch was validated).
ALTER TABLE attempts ADD COLUMN best_val_accuracy float8;

-- Kept by statement-level triggers reading the statement's rows at once (transition
-- tables): a COPY or an import of a thousand epochs updates each attempt once, an
-- epoch that does not raise the best writes nothing, and a deletion (a run started
-- over, a retention pass) recomputes from what is left. A trigger rather than the
-- writes' own SQL, so that no path that writes epochs can forget it.
CREATE FUNCTION attempts_best_val_raised() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE attempts a SET best_val_accuracy = NULLIF(GREATEST(a.best_val_accuracy, n.best), 0)
    FROM (SELECT attempt_id, max(val_accuracy) AS best FROM new_epochs GROUP BY attempt_id) n
    WHERE a.id = n.attempt_id
      AND NULLIF(GREATEST(a.best_val_accuracy, n.best), 0) IS DISTINCT FROM a.best_val_accuracy;
    RETURN NULL;
END
$$;

CREATE FUNCTION attempts_best_val_recomputed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE attempts a SET best_val_accuracy = (
        SELECT NULLIF(max(e.val_accuracy), 0) FROM attempt_epochs e WHERE e.attempt_id = a.id)
    WHERE a.id IN (SELECT DISTINCT attempt_id FROM old_epochs);
    RETURN NULL;
END
$$;

CREATE TRIGGER attempt_epochs_best_inserted AFTER INSERT ON attempt_epochs
    REFERENCING NEW TABLE AS new_epochs
    FOR EACH STATEMENT EXECUTE FUNCTION attempts_best_val_raised();

CREATE TRIGGER attempt_epochs_best_deleted AFTER DELETE ON attempt_epochs
    REFERENCING OLD TABLE AS old_epochs
    FOR EACH STATEMENT EXECUTE FUNCTION attempts_best_val_recomputed();

-- An epoch's numbers are never rewritten in place today; if one is, the best follows.
CREATE TRIGGER attempt_epochs_best_updated AFTER UPDATE ON attempt_epochs
    REFERENCING OLD TABLE AS old_epochs
    FOR EACH STATEMENT EXECUTE FUNCTION attempts_best_val_recomputed();

UPDATE attempts a SET best_val_accuracy = b.best
FROM (SELECT attempt_id, NULLIF(max(val_accuracy), 0) AS best
      FROM attempt_epochs GROUP BY attempt_id) b
WHERE a.id = b.attempt_id AND b.best IS NOT NULL;

-- Both directions of `order_by_field`: best first (DESC), and worst first (ASC); NULLs
-- (never validated) last either way, then id, as ListAttempts orders them.
CREATE INDEX attempts_best_val_desc ON attempts (best_val_accuracy DESC NULLS LAST, id);
CREATE INDEX attempts_best_val_asc ON attempts (best_val_accuracy ASC NULLS LAST, id);
