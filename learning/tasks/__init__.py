"""Learning across tasks: distances between profiles, warm-start priors, defaults."""
