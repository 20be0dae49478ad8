"""The paper's five evaluation protocols, vectorised (docs/paper.md).

MO-MG is `mo_mg`; the three single-groundtruth protocols (MO-SG, SO-SG and
the user models' SG) share one implementation, `single_groundtruth`, and
differ only in their decision rule, `DECISIONS`; satisfaction is
`satisfaction_per_user` (and its mean, `satisfaction`). The SG protocols
and satisfaction are computed from per-user counts, so the bootstrap over
users (ctxtag.evaluation.evaluators) resamples the very sums the point estimate is made of.

Notation: for the test pairs, G is the one-hot ground truth per
(user, track) pair; the audio model gives one sigmoid vector per track, the
user models one softmax vector per pair. Binary predictions threshold scores
at `score >= 0.5`; precision of a context with no predicted positive is 0, as
is F1 when precision and recall are both 0 (scikit-learn's zero_division=0).
A metric that is undefined for the data (AUC of a context with no positive
or no negative, a mean over no defined value) is NaN here and null in
results.json.
"""

import numpy as np

from ctxtag import labels
from ctxtag.evaluation import auc
from ctxtag.evaluation import users as users_lib

THRESHOLD = 0.5
METRICS = ("auc", "recall", "precision", "f1")
SATISFACTION_METRICS = ("accuracy", "recall", "precision", "f1")


def _divide(numerator, denominator):
  """numerator / denominator, 0 where the denominator is 0."""
  numerator = np.asarray(numerator, np.float64)
  denominator = np.asarray(denominator, np.float64)
  out = np.zeros(np.broadcast(numerator, denominator).shape)
  return np.divide(numerator, denominator, out=out, where=denominator != 0)


def recall_precision_f1(tp, fp, fn):
  """Elementwise recall, precision and F1 from counts (0 where undefined)."""
  recall = _divide(tp, tp + fn)
  precision = _divide(tp, tp + fp)
  f1 = _divide(2 * precision * recall, precision + recall)
  return recall, precision, f1


def auc_per_label(truth_NxC: np.ndarray, scores_NxC: np.ndarray) -> np.ndarray:
  """ROC AUC of each column (Mann-Whitney with tied ranks averaged).

  A column whose truth is all positive or all negative gets NaN.
  """
  return auc.placements(truth_NxC, scores_NxC)[0]


def mean_of_defined(values) -> float:
  """Mean of the non-NaN values; NaN (without a warning) if there are none."""
  values = np.asarray(values, np.float64)
  defined = values[~np.isnan(values)]
  return float(defined.mean()) if defined.size else float("nan")


def binary_metrics(truth_NxC, predicted_NxC, scores_NxC) -> dict:
  """Per-context AUC (of the scores), recall, precision and F1 (of the
  binary predictions), and their means over contexts."""
  truth = np.asarray(truth_NxC, bool)
  predicted = np.asarray(predicted_NxC, bool)
  tp = (truth & predicted).sum(axis=0)
  return metrics_from_counts(tp, predicted.sum(axis=0) - tp,
                             truth.sum(axis=0), auc_per_label(truth,
                                                              scores_NxC))


def metrics_from_counts(tp_C, fp_C, positives_C, auc_C) -> dict:
  """binary_metrics' dict from pooled counts and per-context AUC."""
  recall, precision, f1 = recall_precision_f1(
      tp_C, fp_C, np.asarray(positives_C) - tp_C)
  per_metric = {"auc": np.asarray(auc_C, np.float64), "recall": recall,
                "precision": precision, "f1": f1}
  return {
      "per_label": {
          label: {m: float(per_metric[m][i]) for m in METRICS}
          for i, label in enumerate(labels.LABELS)},
      "average": {m: mean_of_defined(per_metric[m]) for m in METRICS},
  }


def one_hot_argmax(scores_NxC: np.ndarray) -> np.ndarray:
  """One-hot of each row's highest score (the first, among ties)."""
  return np.eye(labels.NUM_LABELS, dtype=bool)[np.argmax(scores_NxC, axis=1)]


def mo_mg(track_truth_NxC, track_scores_NxC) -> dict:
  """1. Multi-output, multi-groundtruth: audio scores per track vs the
  track's multi-label union of contexts; the classic protocol."""
  return binary_metrics(track_truth_NxC, track_scores_NxC >= THRESHOLD,
                        track_scores_NxC)


def thresholded(scores_NxC: np.ndarray) -> np.ndarray:
  """Every context whose score reaches THRESHOLD (the multi-output rule)."""
  return np.asarray(scores_NxC) >= THRESHOLD


# The rules from a model's pair scores to binary predictions (a model
# entry's `sg_decision`, ctxtag.models): "argmax", its single best context
# (SO-SG of the audio model, SG of the user models); "thresholded", every
# context reaching THRESHOLD (MO-SG). AUC always uses the scores themselves.
DECISIONS = {"argmax": one_hot_argmax, "thresholded": thresholded}


def single_groundtruth(users: users_lib.Users, truth_PxC, predicted_PxC,
                       auc_C) -> tuple[dict, np.ndarray, np.ndarray]:
  """2.-4. An SG protocol: binary predictions per pair vs each pair's one
  context, from per-user counts.

  Args:
    users: the users of the pairs (their order is the pairs' order).
    truth_PxC: one-hot ground truth of each pair.
    predicted_PxC: the protocol's binary predictions (`DECISIONS`).
    auc_C: per-context AUC of the scores the predictions came from.

  Returns:
    binary_metrics' dict, and each user's true and false positives per
    context, (users, C) each: with the users' positives, the sufficient
    statistics of the recall, precision and F1 (for the intervals).
  """
  truth = np.asarray(truth_PxC, bool)
  predicted = np.asarray(predicted_PxC, bool)
  tp_UxC = users.sum(truth & predicted)
  fp_UxC = users.sum(predicted) - tp_UxC
  result = metrics_from_counts(tp_UxC.sum(axis=0), fp_UxC.sum(axis=0),
                               truth.sum(axis=0), auc_C)
  return result, tp_UxC, fp_UxC


def satisfaction_per_user(users: users_lib.Users, truth_PxC,
                          predicted_PxC) -> dict[str, np.ndarray]:
  """Protocol 5 before the mean over users: each user's four metrics.

  Computed from per-(user, context) counts, with no loop over users.

  Args:
    users: the users of the pairs.
    truth_PxC: one-hot ground truth of each pair.
    predicted_PxC: one-hot (or any binary) prediction of each pair.

  Returns:
    {"accuracy", "recall", "precision", "f1"}, each of shape (users,).
  """
  truth = np.asarray(truth_PxC, bool)
  predicted = np.asarray(predicted_PxC, bool)
  tp = users.sum(truth & predicted)
  positives = users.sum(truth)
  fp = users.sum(predicted) - tp
  fn = positives - tp
  tn = users.pairs_U[:, None] - tp - fp - fn
  recall, precision, f1 = recall_precision_f1(tp, fp, fn)
  metric = {"accuracy": (tp + tn) / users.pairs_U[:, None],
            "recall": recall, "precision": precision, "f1": f1}
  active = positives > 0
  # Every user has at least one pair, so at least one active context.
  return {name: (values * active).sum(axis=1) / active.sum(axis=1)
          for name, values in metric.items()}


def satisfaction(user_ids_P, truth_PxC, predicted_PxC) -> dict:
  """5. User satisfaction, averaged over users.

  For each user, over the user's pairs and for each context present in the
  user's ground truth (active contexts): binary accuracy, recall, precision
  and F1 of the one-hot predictions; mean over active contexts, then over
  users.

  Args:
    user_ids_P: user of each pair.
    truth_PxC: one-hot ground truth of each pair.
    predicted_PxC: one-hot (or any binary) prediction of each pair.

  Returns:
    {"accuracy", "recall", "precision", "f1", "users"}.
  """
  users = users_lib.Users.from_ids(user_ids_P)
  per_user = satisfaction_per_user(users, truth_PxC, predicted_PxC)
  result = {name: float(values.mean()) for name, values in per_user.items()}
  result["users"] = users.count
  return result


def average_from_counts(tp_XxC, fp_XxC, positives_XxC) -> dict:
  """Recall, precision and F1 of pooled counts, averaged over contexts.

  Works on any leading shape: (C,) gives floats, (B, C) gives (B,) arrays.
  """
  recall, precision, f1 = recall_precision_f1(
      tp_XxC, fp_XxC, np.asarray(positives_XxC) - tp_XxC)
  return {"recall": recall.mean(axis=-1), "precision": precision.mean(axis=-1),
          "f1": f1.mean(axis=-1)}

