-- Provenance (issue 25): where an attempt's numbers come from, so that what learns from
-- the store (suggestions, warm starts, the task distance, the curve model) can tell
-- evidence from claims.
--   'TRAINED'   its runs are made by this gateway's trainers, every number measured
--               there and checked here: evidence.
--   'IMPORTED'  brought in by ImportAttempts, its history as the document said: a claim.
-- Generated from the document's `imported` flag rather than kept beside it, so the two
-- cannot disagree: training an imported attempt again clears the flag, and with it the
-- claim. A later kind of claim (runs reported by users' own code) adds its own document
-- flag and a branch here.
ALTER TABLE attempts ADD COLUMN provenance text GENERATED ALWAYS AS (
    CASE WHEN doc -> 'imported' = 'true'::jsonb THEN 'IMPORTED' ELSE 'TRAINED' END) STORED;

-- Whether an attempt's numbers may teach the learners: runs trained here always; claims
-- only when their owner is trusted: one of `trusted` (the caller, and the owners the
-- gateway's admin configured) or an admin (who decides what is trusted anyway). The
-- one definition of the rule, for every store that learns.
CREATE FUNCTION trusted_run(provenance text, owner text, trusted text[]) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT provenance = 'TRAINED' OR owner = ANY(trusted)
           OR EXISTS (SELECT 1 FROM tokens t WHERE t.name = owner AND t.role = 'admin')
$$;

-- The kept task distance was fitted on every claim: the next use refits it on evidence.
DELETE FROM task_distance;
