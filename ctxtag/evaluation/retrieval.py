"""Retrieval: how well each model ranks a catalog for a user and a context.

A query is a (user, context) pair: one for each test user and each context
the user gave in the test split. Every test track is ranked by the model's
probability of that context for that user; the relevant tracks are the
user's test tracks with that context. Per query: recall@10, NDCG@10 (binary
gains) and average precision; averaged over the user's queries, then over
users, as satisfaction is.

Tied scores are counted at their expected value over the orderings of each
tie group, so a model that gives every track the same score (the user-only
model) scores as the random ranking it is. With a tie group of e tracks,
g ranked above it, a relevant track in it lands at each rank g + 1 ... g + e
with probability 1 / e; given its rank g + r, the other m - 1 relevant
tracks of the group are ahead of it (r - 1)(m - 1) / (e - 1) times on
average, which makes the expected precision at it exact too.

`graded_ndcg` scores a ranking against graded gains (the true
probabilities, where the simulated world gives them for every track).
"""

import numpy as np

from ctxtag import models

CUTOFF = 10
METRICS = ("recall@10", "ndcg@10", "ap")
GRADED_METRICS = ("graded_ndcg@10",)
# How much a model's top 10 keeps of the audio model's (the reference).
OVERLAP_METRIC = "audio_overlap@10"
# A pair model's gain from knowing the user: its metric minus the same
# model's for the average user (its catalog's `depersonalized`).
USER_GAIN_METRICS = ("user_gain_ndcg@10", "user_gain_graded_ndcg@10")


def _discounts(ranks) -> np.ndarray:
  """1 / log2(rank + 1) for ranks within CUTOFF, else 0."""
  ranks = np.asarray(ranks, np.float64)
  return np.where(ranks <= CUTOFF, 1 / np.log2(ranks + 1), 0.0)


# Cumulative discounts: _CUMULATIVE[n] = sum of the first n discounts.
_CUMULATIVE = np.concatenate([[0.0], np.cumsum(_discounts(np.arange(
    1, CUTOFF + 1)))])


def _mean_discount(above, ties) -> np.ndarray:
  """Expected discount of a track placed uniformly in ranks above + 1 ...
  above + ties."""
  low = np.minimum(above, CUTOFF)
  high = np.minimum(above + ties, CUTOFF)
  return (_CUMULATIVE[high] - _CUMULATIVE[low]) / ties


def query_metrics(scores_T: np.ndarray, relevant: np.ndarray) -> np.ndarray:
  """METRICS of one query, ties at their expected value.

  Args:
    scores_T: the model's score of every catalog track.
    relevant: indices into `scores_T` of the relevant tracks (at least one,
      distinct).

  Returns:
    (3,) recall@10, NDCG@10, average precision.
  """
  relevant = np.asarray(relevant)
  return batch_metrics(np.asarray(scores_T)[None], np.zeros(len(relevant),
                                                            int),
                       relevant)[0]


def batch_metrics(scores_QxT: np.ndarray, query_R: np.ndarray,
                  track_R: np.ndarray) -> np.ndarray:
  """METRICS of a batch of queries, ties at their expected value.

  Args:
    scores_QxT: each query's scores of every catalog track.
    query_R: the query of each relevant (query, track); every query has at
      least one.
    track_R: its track, distinct within a query.

  Returns:
    (Q, 3) recall@10, NDCG@10, average precision.
  """
  scores_QxT = np.asarray(scores_QxT)
  query_R, track_R = np.asarray(query_R), np.asarray(track_R)
  value_R = scores_QxT[query_R, track_R]
  rows = scores_QxT[query_R]
  above = (rows > value_R[:, None]).sum(axis=1)
  ties = (rows == value_R[:, None]).sum(axis=1)
  count_Q = np.bincount(query_R, minlength=len(scores_QxT))
  recall = np.bincount(query_R, np.clip(CUTOFF - above, 0, ties) / ties,
                       len(scores_QxT)) / count_Q
  ideal = _CUMULATIVE[np.minimum(count_Q, CUTOFF)]
  ndcg = np.bincount(query_R, _mean_discount(above, ties),
                     len(scores_QxT)) / ideal
  same = query_R[:, None] == query_R[None, :]
  relevant_above = (same & (value_R[None, :] > value_R[:, None])).sum(axis=1)
  relevant_ties = (same & (value_R[None, :] == value_R[:, None])).sum(axis=1)
  precision = (relevant_above + 1) / (above + 1.0)  # no tie: rank above + 1
  for r in np.flatnonzero(ties > 1):
    precision[r] = _expected_precision(above[r], ties[r], relevant_above[r],
                                       relevant_ties[r])
  ap = np.bincount(query_R, precision, len(scores_QxT)) / count_Q
  return np.stack([recall, ndcg, ap], axis=1)


def _expected_precision(above: int, ties: int, relevant_above: int,
                        relevant_ties: int) -> float:
  """E[precision at a relevant track] over the orderings of its tie group
  (ties tracks, relevant_ties of them relevant, itself included)."""
  r = np.arange(1, ties + 1, dtype=np.float64)
  others = (r - 1) * (relevant_ties - 1) / max(ties - 1, 1)
  return float(np.mean((relevant_above + 1 + others) / (above + r)))


def graded_ndcg(scores_QxT: np.ndarray, gains_QxT: np.ndarray,
                ideal_Q: np.ndarray | None = None) -> np.ndarray:
  """NDCG@10 of each row's ranking by `scores` against graded `gains`,
  ties at their expected value.

  Args:
    scores_QxT: each query's scores of the catalog.
    gains_QxT: each query's gain of every track (e.g. the true probability
      of the query's context), non-negative.
    ideal_Q: `ideal_dcg(gains_QxT)`, if already known.

  Returns:
    (Q,) NDCG@10; NaN for a query whose gains are all 0.
  """
  scores_QxT = np.asarray(scores_QxT)
  gains_QxT = np.asarray(gains_QxT, np.float64)
  cutoff = min(CUTOFF, scores_QxT.shape[1])
  discounts = _discounts(np.arange(1, cutoff + 1))
  ideal = ideal_dcg(gains_QxT) if ideal_Q is None else ideal_Q
  # A row of one score throughout (a model blind to the track, such as the
  # user-only model): every track's gain is expected at every rank. Such
  # rows need no ranking, which is most of the work.
  constant = (scores_QxT == scores_QxT[:, :1]).all(axis=1)
  dcg = np.empty(len(scores_QxT))
  dcg[constant] = gains_QxT[constant].mean(axis=1) * discounts.sum()
  ranked = np.flatnonzero(~constant)
  if len(ranked):
    dcg[ranked] = _ranked_dcg(scores_QxT[ranked], gains_QxT[ranked],
                              discounts)
  return np.divide(dcg, ideal, out=np.full(len(dcg), np.nan),
                   where=ideal > 0)


def _ranked_dcg(scores_QxT: np.ndarray, gains_QxT: np.ndarray,
                discounts: np.ndarray) -> np.ndarray:
  """DCG@10 of each row's ranking; ties at their expected value."""
  cutoff = len(discounts)
  rows = np.arange(len(scores_QxT))[:, None]
  top = np.argpartition(-scores_QxT, cutoff - 1, axis=1)[:, :cutoff]
  top = top[rows, np.argsort(-scores_QxT[rows, top], axis=1, kind="stable")]
  dcg = gains_QxT[rows, top] @ discounts
  # Where a tie reaches into the top 10 the order within it is arbitrary:
  # those rows take the expectation over orderings instead.
  top_values = scores_QxT[rows, top]
  tied = ((scores_QxT >= top_values[:, -1:]).sum(axis=1) > cutoff) | (
      np.diff(top_values, axis=1) == 0).any(axis=1)
  for q in np.flatnonzero(tied):
    dcg[q] = _expected_dcg(scores_QxT[q], gains_QxT[q])
  return dcg


def ideal_dcg(gains_QxT: np.ndarray) -> np.ndarray:
  """Each row's DCG@10 of its best ordering."""
  gains_QxT = np.asarray(gains_QxT, np.float64)
  cutoff = min(CUTOFF, gains_QxT.shape[1])
  best = -np.partition(-gains_QxT, cutoff - 1, axis=1)[:, :cutoff]
  return -np.sort(-best, axis=1) @ _discounts(np.arange(1, cutoff + 1))


def _expected_dcg(scores_T: np.ndarray, gains_T: np.ndarray) -> float:
  """DCG@10 of one ranking: each tie group reaching the top 10 contributes
  its mean gain times the discounts of the ranks it spans."""
  top = np.argpartition(-scores_T, min(CUTOFF, len(scores_T) - 1))[:CUTOFF]
  total, above = 0.0, 0
  for value in np.unique(scores_T[top])[::-1]:
    group = scores_T == value
    ties = int(group.sum())
    total += gains_T[group].mean() * ties * float(
        _mean_discount(np.array([above]), np.array([ties]))[0])
    above += ties
    if above >= CUTOFF:
      break
  return total


# --- Catalogs: any model's scores of every evaluated track for any user ---


class TrackCatalog:
  """A multi-label model's per-track scores: the same for every user."""

  def __init__(self, song_ids_T: np.ndarray, scores_TxC: np.ndarray):
    self.song_ids = np.asarray(song_ids_T)
    self._scores_CxT = np.ascontiguousarray(np.asarray(scores_TxC).T)

  def scores(self, user_ids_Q, contexts_Q) -> np.ndarray:
    del user_ids_Q
    return self._scores_CxT[np.asarray(contexts_Q)]


class _UserRows:
  """Rows of per-user values, looked up for a batch of user ids at once."""

  def __init__(self, user_ids_U, values_UxC, what: str):
    user_ids_U = np.asarray(user_ids_U)
    order = np.argsort(user_ids_U, kind="stable")
    self._ids, self._values = user_ids_U[order], np.asarray(values_UxC)[order]
    self._what = what

  def __call__(self, user_ids_Q, contexts_Q) -> np.ndarray:
    user_ids_Q = np.asarray(user_ids_Q)
    at = np.searchsorted(self._ids, user_ids_Q)
    at = np.minimum(at, len(self._ids) - 1)
    unknown = self._ids[at] != user_ids_Q
    if unknown.any():
      raise KeyError(f"{self._what} has no user {user_ids_Q[unknown][0]}")
    return self._values[at, np.asarray(contexts_Q)]


class UserCatalog:
  """A model whose scores depend on the user alone (the user-only model):
  every track of a query gets the same score, a tie over the catalog."""

  def __init__(self, song_ids_T: np.ndarray, user_ids_U: np.ndarray,
               scores_UxC: np.ndarray):
    self.song_ids = np.asarray(song_ids_T)
    self._rows = _UserRows(user_ids_U, scores_UxC, "the user catalog")

  def scores(self, user_ids_Q, contexts_Q) -> np.ndarray:
    values = self._rows(user_ids_Q, contexts_Q)
    return np.broadcast_to(values[:, None], (len(values), len(self.song_ids)))


class MixtureCatalog:
  """The simulated world's true distribution of any (track, user):
  (1 - influence) track_probs + influence user_probs."""

  def __init__(self, song_ids_T, track_probs_TxC, user_probs: dict,
               influence: float):
    self.song_ids = np.asarray(song_ids_T)
    self._track_CxT = (1 - influence) * np.ascontiguousarray(
        np.asarray(track_probs_TxC, np.float64).T)
    users = sorted(user_probs)
    self._users = _UserRows(np.array(users, np.int64),
                            np.stack([np.asarray(user_probs[u], np.float64)
                                      for u in users]), "the true catalog")
    self._influence = influence

  def scores(self, user_ids_Q, contexts_Q) -> np.ndarray:
    contexts_Q = np.asarray(contexts_Q)
    user_part = self._users(user_ids_Q, contexts_Q)
    return self._track_CxT[contexts_Q] + self._influence * user_part[:, None]


def table_catalogs(groundtruth, scores) -> dict:
  """The catalogs that prediction tables alone give: a multi-label model's
  per-track scores, and a model whose scores depend on the user alone
  (its per-pair rows are one vector per user). Other pair models score
  only their pairs in a table: their catalog needs the model
  (ctxtag.recommend.evaluation_catalogs)."""
  found = {}
  for name, table in scores.items():
    model = models.get(name)
    if model.output == "multi_label":
      found[name] = TrackCatalog(table.song_id, table.values_RxC)
    elif model.batches == "users":
      found[name] = user_catalog_of(groundtruth, table)
  return found


def user_catalog_of(groundtruth, table) -> UserCatalog:
  """A UserCatalog from a per-pair table whose rows depend on the user."""
  users, first = np.unique(table.user_id, return_index=True)
  return UserCatalog(np.unique(groundtruth.song_id), users,
                     table.values_RxC[first])


# --- The evaluator -----------------------------------------------------------

_QUERY_CHUNK = 512


def _queries(study):
  """(user index, context, relevant track indices into the sorted song ids)
  of every query, users in the study's order."""
  song_ids = np.unique(study.inputs.groundtruth.song_id)
  track_P = np.searchsorted(
      song_ids, study.inputs.groundtruth.song_id[study.order_P])
  context_P = study.truth_PxC.argmax(axis=1)
  user_P = study.users.index_P
  keys = user_P * len(study.truth_PxC[0]) + context_P
  order = np.lexsort((track_P, keys))
  unique, starts = np.unique(keys[order], return_index=True)
  bounds = np.append(starts, len(order))
  queries = [(int(key // study.truth_PxC.shape[1]),
              int(key % study.truth_PxC.shape[1]),
              track_P[order[a:b]])
             for key, a, b in zip(unique, bounds[:-1], bounds[1:])]
  return song_ids, queries


def _aligned(catalog, song_ids: np.ndarray) -> np.ndarray:
  """Columns of `catalog`'s tracks for the evaluated song ids."""
  position = {int(s): i for i, s in enumerate(catalog.song_ids)}
  missing = [int(s) for s in song_ids if int(s) not in position]
  if missing:
    raise ValueError(f"catalog lacks {len(missing)} evaluated tracks,"
                     f" e.g. song {missing[0]}")
  return np.array([position[int(s)] for s in song_ids])


def expected_overlap(scores_QxT: np.ndarray, reference_QxK: np.ndarray
                     ) -> np.ndarray:
  """The expected share of a reference top-K list (track indices, one row
  per query) in the top K of `scores`, ties at their expected value.

  A reference track of score v is in the top K with probability
  clip(K - above, 0, ties) / ties (above: tracks scored over v; ties:
  tracks scored v). Below the K-th best score t that is 0; above t, every
  track it ties with or is beaten by is among the K best, so the counts
  come from those K; at t, only the ties need the whole row.
  """
  k = reference_QxK.shape[1]
  rows = np.arange(len(scores_QxT))[:, None]
  value_QxK = scores_QxT[rows, reference_QxK]
  if k >= scores_QxT.shape[1]:
    best_QxK = scores_QxT
  else:
    best_QxK = -np.partition(-scores_QxT, k - 1, axis=1)[:, :k]
  threshold_Q = best_QxK.min(axis=1)
  at_threshold_Q = (scores_QxT == threshold_Q[:, None]).sum(axis=1)
  above = (best_QxK[:, None, :] > value_QxK[:, :, None]).sum(axis=2)
  ties = np.where(value_QxK == threshold_Q[:, None], at_threshold_Q[:, None],
                  (best_QxK[:, None, :] == value_QxK[:, :, None]).sum(axis=2))
  share = np.clip(k - above, 0, ties) / np.maximum(ties, 1)
  return np.where(value_QxK < threshold_Q[:, None], 0.0, share).mean(axis=1)


def _top(scores_QxT: np.ndarray, k: int) -> np.ndarray:
  """Each row's k best tracks (ties: lower index first)."""
  k = min(k, scores_QxT.shape[1])
  part = np.argpartition(-scores_QxT, k - 1, axis=1)[:, :k]
  rows = np.arange(len(scores_QxT))[:, None]
  return part[rows, np.lexsort((part, -scores_QxT[rows, part]), axis=1)]


def per_user_retrieval(study, catalog, reference=None) -> np.ndarray:
  """(U, 3) each user's mean METRICS over their queries; (U, 4) with
  OVERLAP_METRIC too, the top 10's share in `reference`'s top 10."""
  song_ids, queries = _queries(study)
  columns = _columns(catalog, song_ids)
  reference_columns = (None if reference is None
                       else _columns(reference, song_ids))
  user_ids_U = study.users.ids_U
  width = len(METRICS) + (reference is not None)
  totals = np.zeros((study.users.count, width))
  counts = np.zeros(study.users.count)
  for start in range(0, len(queries), _QUERY_CHUNK):
    chunk = queries[start:start + _QUERY_CHUNK]
    ids, contexts = [user_ids_U[u] for u, _, _ in chunk], [
        c for _, c, _ in chunk]
    scores = _scores(catalog, columns, ids, contexts)
    query_R = np.concatenate([np.full(len(relevant), q) for q, (_, _, relevant)
                              in enumerate(chunk)])
    track_R = np.concatenate([relevant for _, _, relevant in chunk])
    values = batch_metrics(scores, query_R, track_R)
    if reference is not None:
      top = _top(_scores(reference, reference_columns, ids, contexts), CUTOFF)
      values = np.concatenate(
          [values, expected_overlap(scores, top)[:, None]], axis=1)
    users = np.array([u for u, _, _ in chunk])
    np.add.at(totals, users, values)
    np.add.at(counts, users, 1)
  return totals / counts[:, None]


def _columns(catalog, song_ids: np.ndarray):
  """`_aligned`, or None where the catalog's tracks are those already."""
  if np.array_equal(catalog.song_ids, song_ids):
    return None
  return _aligned(catalog, song_ids)


def _scores(catalog, columns, user_ids, contexts) -> np.ndarray:
  values = catalog.scores(user_ids, contexts)
  return values if columns is None else values[:, columns]


def per_user_graded(study, catalogs: dict, truth) -> dict[str, np.ndarray]:
  """{model: (U, 1)} each user's mean graded NDCG@10 over every context,
  the catalogs' rankings of every evaluated track against the truth."""
  song_ids = np.unique(study.inputs.groundtruth.song_id)
  columns = {name: _columns(c, song_ids) for name, c in catalogs.items()}
  truth_columns = _columns(truth, song_ids)
  user_ids_U = study.users.ids_U
  num_contexts = study.truth_PxC.shape[1]
  values = {name: np.zeros((study.users.count, num_contexts))
            for name in catalogs}
  step = max(1, _QUERY_CHUNK // num_contexts)
  for start in range(0, study.users.count, step):
    users = np.arange(start, min(start + step, study.users.count))
    ids = np.repeat(user_ids_U[users], num_contexts)
    contexts = np.tile(np.arange(num_contexts), len(users))
    gains = _scores(truth, truth_columns, ids, contexts)
    ideal = ideal_dcg(gains)
    for name, catalog in catalogs.items():
      values[name][users] = graded_ndcg(
          _scores(catalog, columns[name], ids, contexts), gains,
          ideal).reshape(len(users), num_contexts)
  return {name: np.nanmean(v, axis=1, keepdims=True)
          for name, v in values.items()}


class Retrieval:
  """Each model with a catalog in the inputs ranks the evaluated tracks for
  every (user, context) query (METRICS); with the true distribution (the
  "oracle" catalog, simulated data), also graded NDCG@10 against it."""

  def run(self, study, results) -> dict:
    del results
    given = {**table_catalogs(study.inputs.groundtruth, study.inputs.models),
             **study.inputs.catalog}
    catalogs = {name: given[name] for name in study.scores if name in given}
    if not catalogs:
      return {}
    truth = given.get("oracle")
    graded = (per_user_graded(study, catalogs, truth) if truth is not None
              else {})
    reference = next((n for n in catalogs
                      if models.get(n).output == "multi_label"), None)
    found = {}
    for name, catalog in catalogs.items():
      compared = reference is not None and name != reference
      values = per_user_retrieval(
          study, catalog, catalogs[reference] if compared else None)
      metrics = METRICS + ((OVERLAP_METRIC,) if compared else ())
      if name in graded:
        values = np.concatenate([values, graded[name]], axis=1)
        metrics += GRADED_METRICS
      if hasattr(catalog, "depersonalized"):
        values, metrics = _with_user_gain(study, catalog, truth, values,
                                          metrics)
      found[name] = study.user_means("retrieval", name, values, metrics)
    return {"retrieval": found}


def _with_user_gain(study, catalog, truth, values, metrics):
  """`values` with each user's gain over the model's average-user ranking
  (USER_GAIN_METRICS: NDCG@10, and graded NDCG@10 with the truth)."""
  average = per_user_retrieval(study, catalog.depersonalized)
  gains = [values[:, metrics.index("ndcg@10")]
           - average[:, METRICS.index("ndcg@10")]]
  names = USER_GAIN_METRICS[:1]
  if truth is not None:
    graded = per_user_graded(study, {"average": catalog.depersonalized},
                             truth)["average"][:, 0]
    gains.append(values[:, metrics.index("graded_ndcg@10")] - graded)
    names = USER_GAIN_METRICS
  return (np.concatenate([values, np.stack(gains, axis=1)], axis=1),
          metrics + names)
