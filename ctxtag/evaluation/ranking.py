"""Ranking metrics per user: where a model ranks each user's true context.

For every pair, the rank of the true context among the model's 10 scores is
r = 1 + the number of contexts scored strictly higher (a tie counts in the
true context's favour). Per pair: hit@1 and hit@3 (r <= k), the reciprocal
rank 1/r, and NDCG@3 (1 / log2(r + 1) when r <= 3, else 0; with a single
relevant context the ideal DCG is 1). Each metric is averaged over a user's
pairs, then over users, as satisfaction is. The audio model scores tracks:
each of a track's pairs uses its track's scores.
"""

import numpy as np

from ctxtag.evaluation import users as users_lib

METRICS = ("hit@1", "hit@3", "mrr", "ndcg@3")
_NDCG_CUTOFF = 3


def true_rank(truth_PxC, scores_PxC) -> np.ndarray:
  """Rank r of each pair's true context: 1 + contexts scored strictly higher.

  Args:
    truth_PxC: one-hot ground truth of each pair.
    scores_PxC: the model's scores of each pair.

  Returns:
    r_P, integers in [1, C].
  """
  scores = np.asarray(scores_PxC)
  true_score_P = scores[np.asarray(truth_PxC, bool)]
  return 1 + (scores > true_score_P[:, None]).sum(axis=1)


def per_pair(rank_P: np.ndarray) -> np.ndarray:
  """(P, 4) values of METRICS for ranks r."""
  rank = np.asarray(rank_P, np.float64)
  ndcg = np.where(rank <= _NDCG_CUTOFF, 1 / np.log2(rank + 1), 0.0)
  return np.stack([rank <= 1, rank <= 3, 1 / rank, ndcg], axis=1)


def per_user(users: users_lib.Users, truth_PxC, scores_PxC) -> np.ndarray:
  """(users, 4): each user's mean of METRICS over the user's pairs."""
  return users.mean(per_pair(true_rank(truth_PxC, scores_PxC)))


def ranking(user_ids_P, truth_PxC, scores_PxC) -> dict[str, float]:
  """hit@1, hit@3, MRR and NDCG@3: per user, then averaged over users.

  Args:
    user_ids_P: user of each pair.
    truth_PxC: one-hot ground truth of each pair.
    scores_PxC: the model's scores of each pair.

  Returns:
    {"hit@1", "hit@3", "mrr", "ndcg@3"}.
  """
  values = per_user(users_lib.Users.from_ids(user_ids_P), truth_PxC,
                    scores_PxC).mean(axis=0)
  return dict(zip(METRICS, values.tolist()))
