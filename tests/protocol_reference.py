"""Readable references for the SG protocols: each computed in one step on
the pooled pairs, the way the protocol is defined, with no per-user counts.
The library computes them from per-user counts (for the bootstrap); tests
check that the two agree."""

from ctxtag import evaluation
from ctxtag.evaluation import evaluators


def single_groundtruth(protocol: str, truth_PxC, scores_PxC) -> dict:
  """SG protocol `protocol` ("mo_sg", "so_sg", "user_sg", ...): its decision
  rule's predictions vs each pair's context, AUC from the scores."""
  predicted_PxC = evaluators.decision(protocol)(scores_PxC)
  return evaluation.binary_metrics(truth_PxC, predicted_PxC, scores_PxC)
