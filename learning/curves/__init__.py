"""Learning from curves: rules, features, the curve model, prognoses, the learned pruner."""
