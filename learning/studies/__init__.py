"""Studies' maths: the search space, bounded sampler arguments, asking a sampler."""
