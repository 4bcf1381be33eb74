-- Retention (issue 30, `metalearn retention`): an old run's per-step data thinned to a
-- bounded number of points (its first epochs, its best, its last, and evenly spaced
-- ones between), its summaries untouched. When, so that what reads whole curves (the
-- curve model: gateway/store/curves.py) passes over a thinned one.
ALTER TABLE attempts ADD COLUMN compacted_at timestamptz;
