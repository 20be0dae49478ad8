"""The paper's five evaluation protocols, one function each, vectorised.

Notation (PAPER.md): for the test pairs, G is the one-hot ground truth per
(user, track) pair; the audio model gives one sigmoid vector per track, the
user models one softmax vector per pair. Binary predictions threshold scores
at `score >= 0.5`; precision of a context with no predicted positive is 0, as
is F1 when precision and recall are both 0 (scikit-learn's zero_division=0).
A metric that is undefined for the data (AUC of a context with no positive
or no negative, a mean over no defined value) is NaN here and null in
results.json.
"""

import numpy as np
import scipy.stats

from ctxtag import labels

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
  truth = np.asarray(truth_NxC, bool)
  ranks = scipy.stats.rankdata(scores_NxC, axis=0)
  positives = truth.sum(axis=0)
  negatives = truth.shape[0] - positives
  rank_sum = (ranks * truth).sum(axis=0)
  with np.errstate(invalid="ignore", divide="ignore"):
    auc = (rank_sum - positives * (positives + 1) / 2) / (
        positives * negatives)
  return np.where((positives > 0) & (negatives > 0), auc, np.nan)


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
  fp = (~truth & predicted).sum(axis=0)
  fn = (truth & ~predicted).sum(axis=0)
  recall, precision, f1 = recall_precision_f1(tp, fp, fn)
  per_metric = {"auc": auc_per_label(truth, scores_NxC), "recall": recall,
                "precision": precision, "f1": f1}
  return {
      "per_label": {
          label: {m: float(per_metric[m][i]) for m in METRICS}
          for i, label in enumerate(labels.LABELS)},
      "average": {m: mean_of_defined(per_metric[m]) for m in METRICS},
  }


def one_hot_argmax(scores_NxC: np.ndarray) -> np.ndarray:
  return np.eye(labels.NUM_LABELS, dtype=bool)[np.argmax(scores_NxC, axis=1)]


def mo_mg(track_truth_NxC, track_scores_NxC) -> dict:
  """1. Multi-output, multi-groundtruth: audio scores per track vs the
  track's multi-label union of contexts; the classic protocol."""
  return binary_metrics(track_truth_NxC, track_scores_NxC >= THRESHOLD,
                        track_scores_NxC)


def mo_sg(pair_truth_PxC, pair_track_scores_PxC) -> dict:
  """2. Multi-output, single-groundtruth: each pair's track scores,
  thresholded, vs that user's single context."""
  return binary_metrics(pair_truth_PxC, pair_track_scores_PxC >= THRESHOLD,
                        pair_track_scores_PxC)


def so_sg(pair_truth_PxC, pair_track_scores_PxC) -> dict:
  """3. Single-output, single-groundtruth: argmax of the track's audio
  scores, one-hot, vs the user's context; AUC still uses the scores."""
  return binary_metrics(pair_truth_PxC, one_hot_argmax(pair_track_scores_PxC),
                        pair_track_scores_PxC)


def user_sg(pair_truth_PxC, pair_scores_PxC) -> dict:
  """4. User model, single-groundtruth: argmax of the per-pair softmax."""
  return binary_metrics(pair_truth_PxC, one_hot_argmax(pair_scores_PxC),
                        pair_scores_PxC)


def satisfaction(user_ids_P, truth_PxC, predicted_PxC) -> dict:
  """5. User satisfaction.

  For each user, over the user's pairs and for each context present in the
  user's ground truth (active contexts): binary accuracy, recall, precision
  and F1 of the one-hot predictions; mean over active contexts, then over
  users. Computed from per-(user, context) counts, with no loop over users.

  Args:
    user_ids_P: user of each pair.
    truth_PxC: one-hot ground truth of each pair.
    predicted_PxC: one-hot (or any binary) prediction of each pair.

  Returns:
    {"accuracy", "recall", "precision", "f1", "users"}.
  """
  _, user_P = np.unique(np.asarray(user_ids_P), return_inverse=True)
  user_P = user_P.ravel()
  truth = np.asarray(truth_PxC, bool)
  predicted = np.asarray(predicted_PxC, bool)
  num_users = user_P.max() + 1

  def per_user(values_PxC):
    counts = np.zeros((num_users, labels.NUM_LABELS))
    np.add.at(counts, user_P, values_PxC.astype(np.float64))
    return counts

  tp = per_user(truth & predicted)
  positives = per_user(truth)
  predicted_positives = per_user(predicted)
  pairs = np.bincount(user_P, minlength=num_users)[:, None]
  fp, fn = predicted_positives - tp, positives - tp
  tn = pairs - tp - fp - fn
  recall, precision, f1 = recall_precision_f1(tp, fp, fn)
  metric = {"accuracy": (tp + tn) / pairs, "recall": recall,
            "precision": precision, "f1": f1}
  active = positives > 0
  result = {
      name: float((_divide((values * active).sum(axis=1),
                           active.sum(axis=1))).mean())
      for name, values in metric.items()}
  result["users"] = int(num_users)
  return result


PROTOCOLS = {"mo_mg": mo_mg, "mo_sg": mo_sg, "so_sg": so_sg,
             "user_sg": user_sg}
