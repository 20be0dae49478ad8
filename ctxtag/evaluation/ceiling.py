"""Share of the ceiling: how much of the reachable gain a model achieves.

On simulated data the true context distribution of every pair is known, and
an oracle that predicts it is the best anyone can do in expectation. A
baseline that knows neither the audio nor the user predicts the training
prior (the train split's context shares) for every pair: its single-output
prediction is the prior's argmax, its ranking the prior's order, and its AUC
0.5. A model's share of the ceiling on a metric is

  (model - baseline) / (oracle - baseline),

0 at the prior and 1 at the oracle; below 0 is worse than the prior. It is
undefined (NaN, null in results.json) where the oracle does not beat the
baseline.
"""

import numpy as np

from ctxtag import labels

GROUPS = ("satisfaction", "ranking", "sg")


def prior(label_P) -> np.ndarray:
  """The context shares of training labels (indices in the label order)."""
  counts = np.bincount(np.asarray(label_P), minlength=labels.NUM_LABELS)
  if not counts.sum():
    raise ValueError("no training labels to compute the prior from")
  return counts / counts.sum()


def share(value: float, baseline: float, oracle: float) -> float:
  """(value - baseline) / (oracle - baseline); NaN unless the oracle gains."""
  gain = oracle - baseline
  if not np.isfinite(value) or not np.isfinite(gain) or gain <= 0:
    return float("nan")
  return float((value - baseline) / gain)


def shares(models: dict[str, dict], baseline: dict, oracle: dict) -> dict:
  """Every model's share of the ceiling on every metric.

  Args:
    models: {model: {group: {metric: value}}} for GROUPS.
    baseline: {group: {metric: value}} of the prior.
    oracle: {group: {metric: value}} of the oracle.

  Returns:
    {model: {group: {metric: share}}}.
  """
  return {
      model: {group: {metric: share(value, baseline[group][metric],
                                    oracle[group][metric])
                      for metric, value in groups[group].items()}
              for group in GROUPS}
      for model, groups in models.items()}
