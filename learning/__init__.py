"""The pure learning of metalearn: what it learns from its store, as plain functions on
plain data: no gRPC server, no database, no event loop. The gateway feeds these from its
stores (gateway/curves, gateway/tasks, gateway/studies); the benchmarks (bench/) replay
them on recorded runs with the very same code, so a figure measured there is the
service's.

- `learning.curves`: a curve's rules (diverged, stuck), its features, the curve model
  (gradient-boosted final accuracy from early epochs), prognoses and the learned pruner.
- `learning.tasks`: distances between task profiles, warm-start priors, defaults.
- `learning.studies`: a study's search space and arguments, and asking Optuna's samplers.
"""
