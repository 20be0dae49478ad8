"""Per-context thresholds tuned on validation, for the MO protocols.

The paper thresholds the audio model's sigmoid outputs at 0.5, but its class
weights push scores up (recall near 1 and precision at the base rate). The
threshold that maximises F1 on the validation split, applied to the test
split, shows what the same scores give with a threshold chosen for them.
"""

import numpy as np

from ctxtag import labels
from ctxtag.evaluation import protocols


def tune(truth_NxC, scores_NxC) -> np.ndarray:
  """The threshold of each context that maximises F1 (predict score >= t).

  The candidates are the scores themselves; among equally good thresholds
  the highest wins (fewest positive predictions). A context without any
  positive has no F1 to maximise and keeps protocols.THRESHOLD.

  Args:
    truth_NxC: binary truth (validation).
    scores_NxC: scores (validation).

  Returns:
    thresholds_C.
  """
  truth = np.asarray(truth_NxC, bool).T
  scores = np.asarray(scores_NxC, np.float64).T
  order = np.argsort(-scores, axis=1)  # ties are resolved below
  descending = np.take_along_axis(scores, order, axis=1)
  true_positives = np.cumsum(np.take_along_axis(truth, order, axis=1), axis=1)
  predicted = np.arange(1, scores.shape[1] + 1)
  positives = truth.sum(axis=1, keepdims=True)
  f1 = 2 * true_positives / (predicted + positives)
  # Only the last of a run of tied scores is a threshold one can set.
  last_of_tie = np.ones_like(descending, bool)
  last_of_tie[:, :-1] = descending[:, 1:] != descending[:, :-1]
  best = np.argmax(np.where(last_of_tie, f1, -1), axis=1)
  chosen = descending[np.arange(len(best)), best]
  return np.where(positives[:, 0] > 0, chosen, protocols.THRESHOLD)


def tuned_protocol(validation_truth, validation_scores, test_truth,
                   test_scores) -> dict:
  """A protocol's metrics on test with thresholds tuned on validation.

  Returns:
    binary_metrics' dict ("per_label", "average"; AUC is that of the
    scores, unchanged by thresholds) plus "thresholds": {label: threshold}.
  """
  thresholds_C = tune(validation_truth, validation_scores)
  result = protocols.binary_metrics(test_truth, test_scores >= thresholds_C,
                                    test_scores)
  result["thresholds"] = dict(zip(labels.LABELS, thresholds_C.tolist()))
  return result
