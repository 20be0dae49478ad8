"""ROC AUC per context from placement values, and the per-user terms that
give its bootstrap over users.

The placement of a pair in context c is, for a positive, the number of
negatives scored below it (ties count 1/2), and for a negative, the number of
positives scored above it (ties 1/2). The positives' placements sum to the
Mann-Whitney statistic N, so AUC_c = N / (positives x negatives), and so do
the negatives'.

A bootstrap resample over users weights user u by its count w_u. Its AUC
numerator is a quadratic form in w, N(w) = sum_uv w_u w_v A_uv, where A_uv
counts u's positives above v's negatives; evaluating it exactly needs one
sort per resample and context, about 2 x 10^9 operations for 1,000
resamples of a 51,120-pair test set and four models. With w = 1 + d and the
resample's positives P_b = P + d.p and negatives Q_b = Q + d.q, the AUC
here is

  AUC_b = AUC + (d.g - AUC (Q d.p + P d.q)) / (P_b Q_b),

where g_u sums user u's placements in both roles. This is N(w) / (P_b Q_b)
with A replaced by its first-order part plus the "mean field" AUC p_u q_v of
the second-order one, so numerator and denominator agree to second order
(keeping only d.g in the numerator over an exact denominator biases the
interval upwards by about AUC / users). What it leaves out is the
user-by-user deviation of A from that mean field, of relative size
1/sqrt(users) in each resample's deviation: tests compare the intervals with
the exact weighted AUC of every resample.
"""

import numpy as np


def placements(truth_PxC, scores_NxC, item_P=None):
  """AUC of each context and each pair's placement in it.

  Args:
    truth_PxC: binary truth of each pair.
    scores_NxC: the model's scores: of each pair, or of each item (a track
      of the audio model) that several pairs share.
    item_P: each pair's row of `scores_NxC`; None if the rows are the pairs.
      Sorting 7,500 tracks instead of their 51,120 pairs is the same
      computation with counts of positives per track, and 7 times shorter.

  Returns:
    (auc_C, NaN where a context has no positive or no negative;
     placement_PxC, as in the module docstring).
  """
  truth = np.asarray(truth_PxC, bool)
  if item_P is None:
    positives_NxC, pairs_N = truth, None
  else:
    num_items = len(scores_NxC)
    pairs_N = np.bincount(item_P, minlength=num_items)
    positives_NxC = np.stack([np.bincount(item_P, column, num_items)
                              for column in truth.T], axis=1)
  below, above = _placements_of_items(np.asarray(scores_NxC, np.float64),
                                      positives_NxC, pairs_N)
  if item_P is not None:
    below, above = below[item_P], above[item_P]
  placement = np.where(truth, below, above)
  positives_C = truth.sum(axis=0)
  negatives_C = len(truth) - positives_C
  statistic = (below * truth).sum(axis=0)
  with np.errstate(invalid="ignore", divide="ignore"):
    auc = statistic / (positives_C * negatives_C)
  return (np.where((positives_C > 0) & (negatives_C > 0), auc, np.nan),
          placement)


def _placements_of_items(scores_NxC, positives_NxC, pairs_N):
  """For each item and context: the negatives scored below it and the
  positives above it (ties count 1/2), over all pairs of all items.

  Returns:
    (below_NxC, above_NxC).
  """
  # Contexts as rows: each sort and scan runs over contiguous memory.
  scores = np.ascontiguousarray(scores_NxC.T)
  num_contexts, num_items = scores.shape
  order = np.argsort(scores, axis=1)
  sorted_scores = np.take_along_axis(scores, order, axis=1)
  sorted_positives = np.take_along_axis(
      np.ascontiguousarray(positives_NxC.T), order, axis=1).ravel()
  # Tie groups, numbered on through the rows; every row starts a group.
  starts = np.ones((num_contexts, num_items), bool)
  np.not_equal(sorted_scores[:, 1:], sorted_scores[:, :-1],
               out=starts[:, 1:])
  group = np.cumsum(starts.ravel()) - 1
  num_groups = group[-1] + 1
  positive = np.bincount(group, sorted_positives, num_groups)
  negative = np.bincount(
      group, None if pairs_N is None else pairs_N[order].ravel(),
      num_groups) - positive
  # Counts below each group within its row: cumulative sums that restart
  # at each row's first group.
  first = group[::num_items]
  row_groups = np.diff(first, append=num_groups)
  row_first = np.repeat(first, row_groups)
  below_negative = np.cumsum(negative) - negative
  below_positive = np.cumsum(positive) - positive
  below = below_negative - below_negative[row_first] + negative / 2
  above = (np.repeat(np.add.reduceat(positive, first), row_groups)
           - below_positive + below_positive[row_first] - positive / 2)
  flat = (order + num_items * np.arange(num_contexts)[:, None]).ravel()
  result = []
  for per_group in (below, above):
    unsorted = np.empty(num_contexts * num_items)
    unsorted[flat] = per_group[group]
    result.append(unsorted.reshape(num_contexts, num_items).T)
  return tuple(result)


def resampled(placement_sums_BxC, positives_BxC, pairs_Bx1, auc_C,
              placement_total_C, positives_C, pairs) -> np.ndarray:
  """AUC of each resample and context, as in the module docstring.

  Args:
    placement_sums_BxC: sum over users of count x the user's placements.
    positives_BxC: sum over users of count x the user's positives.
    pairs_Bx1: sum over users of count x the user's pairs.
    auc_C: the AUC of the data itself.
    placement_total_C: the sum of all placements (2N) of the data itself.
    positives_C: the positives of the data itself.
    pairs: the number of pairs of the data itself.

  Returns:
    auc_BxC, NaN where a resample, or the data, has no positive or no
    negative.
  """
  negatives_BxC = pairs_Bx1 - positives_BxC
  negatives_C = pairs - np.asarray(positives_C, np.float64)
  influence = (placement_sums_BxC - placement_total_C
               - auc_C * (negatives_C * (positives_BxC - positives_C)
                          + positives_C * (negatives_BxC - negatives_C)))
  with np.errstate(invalid="ignore", divide="ignore"):
    result = auc_C + influence / (positives_BxC * negatives_BxC)
  return np.where((positives_BxC > 0) & (negatives_BxC > 0), result, np.nan)
