"""How much a run teaches, by where its numbers come from (its provenance, migration
0012 and 0017): a run trained here is evidence, measured by our trainers and checked
here; an imported run or one reported by users' own code is a claim, whose numbers
passed the same checks but were measured where nothing here could see. Claims that are
learned from at all (their owner is trusted) weigh `claim_weight` of a trained run."""

from __future__ import annotations

TRAINED = "TRAINED"
# What a claim weighs by default: half a trained run. A judgement, not a measurement: a
# trusted claim is likely true but unchecked, so it counts, and a task known from runs
# trained here counts twice as much at the same distance. GatewayConfig.claim_weight
# sets it (0 to 1).
CLAIM_WEIGHT = 0.5


def weight(provenance: str, claim_weight: float = CLAIM_WEIGHT) -> float:
    """A run's weight: 1 for evidence, `claim_weight` for a claim."""
    return 1.0 if provenance == TRAINED else claim_weight
