"""The retrieval metrics against independent computations: scikit-learn
without ties, and the mean over every ordering of the tie groups with."""

import itertools

import numpy as np
import pytest
from sklearn import metrics as skm

from ctxtag.evaluation import retrieval


def _by_hand(order, relevant):
  """recall@10, NDCG@10 and AP of one strict ordering, from the
  definitions."""
  ranks = {track: rank for rank, track in enumerate(order, 1)}
  relevant_ranks = sorted(ranks[t] for t in relevant)
  recall = sum(r <= 10 for r in relevant_ranks) / len(relevant)
  dcg = sum(1 / np.log2(r + 1) for r in relevant_ranks if r <= 10)
  ideal = sum(1 / np.log2(i + 1) for i in range(1, min(len(relevant), 10) + 1))
  ap = np.mean([(i + 1) / r for i, r in enumerate(relevant_ranks)])
  return np.array([recall, dcg / ideal, ap])


def _over_orderings(scores, relevant):
  """The metrics' mean over every ordering consistent with the scores."""
  groups = [list(np.flatnonzero(scores == v))
            for v in sorted(set(scores.tolist()), reverse=True)]
  values = [_by_hand([t for group in groups_order for t in group], relevant)
            for groups_order in itertools.product(
                *[itertools.permutations(g) for g in groups])]
  return np.mean(values, axis=0)


def test_without_ties_equals_scikit_learn():
  rng = np.random.default_rng(0)
  for _ in range(20):
    scores = rng.permutation(30).astype(float)
    relevant = rng.choice(30, size=rng.integers(1, 6), replace=False)
    truth = np.zeros(30)
    truth[relevant] = 1
    recall, ndcg, ap = retrieval.query_metrics(scores, relevant)
    assert ap == pytest.approx(skm.average_precision_score(truth, scores))
    assert ndcg == pytest.approx(skm.ndcg_score([truth], [scores], k=10))
    top10 = np.argsort(-scores)[:10]
    assert recall == pytest.approx(np.isin(relevant, top10).mean())


def test_ties_count_at_their_expected_value_over_orderings():
  rng = np.random.default_rng(1)
  for _ in range(15):
    # 11 tracks, few distinct scores: tie groups across the cutoff.
    scores = rng.integers(0, 4, size=11).astype(float)
    relevant = rng.choice(11, size=rng.integers(1, 4), replace=False)
    np.testing.assert_allclose(retrieval.query_metrics(scores, relevant),
                               _over_orderings(scores, relevant))


def test_all_tied_is_the_random_ranking():
  scores = np.zeros(1000)
  recall, ndcg, ap = retrieval.query_metrics(scores, np.array([3]))
  assert recall == pytest.approx(10 / 1000)
  # One relevant track: E[1 / rank] over uniform ranks is H(1000) / 1000.
  assert ap == pytest.approx(np.sum(1 / np.arange(1, 1001)) / 1000)
  assert ndcg == pytest.approx(np.sum(1 / np.log2(np.arange(2, 12))) / 1000)


def test_graded_ndcg_equals_scikit_learn_and_averages_ties():
  rng = np.random.default_rng(2)
  scores = rng.normal(size=(5, 40))
  gains = rng.uniform(size=(5, 40))
  np.testing.assert_allclose(
      retrieval.graded_ndcg(scores, gains),
      [skm.ndcg_score([g], [s], k=10) for s, g in zip(scores, gains)])
  tied = np.zeros((1, 40))
  ideal = np.sort(gains[0])[::-1][:10] @ (1 / np.log2(np.arange(2, 12)))
  expected = gains[0].mean() * np.sum(1 / np.log2(np.arange(2, 12))) / ideal
  np.testing.assert_allclose(retrieval.graded_ndcg(tied, gains[:1]),
                             [expected])
  # Small tie groups: the mean over orderings, by enumeration.
  scores = np.array([[3, 3, 2, 2, 2, 1, 1, 1, 1, 1, 1, 0, 0.0]])
  gains = rng.uniform(size=(1, 13))
  groups = [np.flatnonzero(scores[0] == v) for v in (3, 2, 1, 0)]
  dcgs = []
  for ordering in itertools.product(*[itertools.permutations(g)
                                      for g in groups]):
    order = [t for g in ordering for t in g][:10]
    dcgs.append(sum(gains[0, t] / np.log2(r + 2) for r, t in enumerate(order)))
  ideal = np.sort(gains[0])[::-1][:10] @ (1 / np.log2(np.arange(2, 12)))
  np.testing.assert_allclose(retrieval.graded_ndcg(scores, gains),
                             [np.mean(dcgs) / ideal])


def test_the_evaluator_averages_queries_per_user_then_over_users():
  from ctxtag import study, tables  # pylint: disable=import-outside-toplevel
  from ctxtag.evaluation import bootstrap  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(4)
  song = rng.integers(0, 30, size=120)
  user = rng.integers(0, 25, size=120)
  keep = np.unique(song * 100 + user, return_index=True)[1]  # distinct pairs
  song, user = song[keep], user[keep]
  label = rng.integers(0, 10, size=len(song))
  truth = tables.Table("gt.csv", song, user, np.eye(10)[label])
  tracks = np.unique(song)
  track_scores = rng.uniform(size=(len(tracks), 10))
  audio = tables.Table("audio.csv", tracks, None, track_scores)
  result = study.evaluate(study.Inputs(
      truth, {"audio": audio}, settings=bootstrap.Settings(0)))
  per_user = {}
  for u in np.unique(user):
    values = []
    for c in np.unique(label[user == u]):
      relevant = np.flatnonzero(np.isin(tracks, song[(user == u)
                                                     & (label == c)]))
      values.append(_by_hand(np.argsort(-track_scores[:, c]), relevant))
    per_user[u] = np.mean(values, axis=0)
  expected = np.mean(list(per_user.values()), axis=0)
  got = result["retrieval"]["audio"]
  np.testing.assert_allclose([got[m] for m in retrieval.METRICS], expected)


class _PairCatalog:
  """A pair model's catalog: track scores plus each user's own offsets."""

  def __init__(self, song_ids, track_scores, offsets, personal=True):
    self.song_ids, self._scores = song_ids, track_scores
    self._offsets, self._personal = offsets, personal
    if personal:
      self.depersonalized = _PairCatalog(song_ids, track_scores, offsets,
                                         False)

  def scores(self, user_ids_Q, contexts_Q):
    values = self._scores.T[np.asarray(contexts_Q)]
    if self._personal:
      values = values + np.stack([self._offsets[int(u)] for u in user_ids_Q])
    return values


def test_the_user_gain_is_the_personal_ranking_less_the_average_users():
  from ctxtag import study, tables  # pylint: disable=import-outside-toplevel
  from ctxtag.evaluation import bootstrap  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(5)
  song = rng.integers(0, 30, size=100)
  user = rng.integers(0, 20, size=100)
  keep = np.unique(song * 100 + user, return_index=True)[1]
  song, user = song[keep], user[keep]
  label = rng.integers(0, 10, size=len(song))
  truth = tables.Table("gt.csv", song, user, np.eye(10)[label])
  tracks = np.unique(song)
  track_scores = rng.uniform(size=(len(tracks), 10))
  pairs = tables.Table("p.csv", song, user, rng.dirichlet(np.ones(10),
                                                          len(song)))
  for scale in (0.0, 0.3):
    offsets = {u: scale * rng.normal(size=len(tracks)) for u in range(20)}
    catalog = _PairCatalog(tracks, track_scores, offsets)
    result = study.evaluate(study.Inputs(
        truth, {"audio_user": pairs}, settings=bootstrap.Settings(0),
        catalog={"audio_user": catalog}))["retrieval"]["audio_user"]
    expected = []
    for u in np.unique(user):
      values = []
      for c in np.unique(label[user == u]):
        relevant = np.flatnonzero(np.isin(tracks, song[(user == u)
                                                       & (label == c)]))
        own = track_scores[:, c] + offsets[u]
        values.append(_by_hand(np.argsort(-own), relevant)[1]
                      - _by_hand(np.argsort(-track_scores[:, c]),
                                 relevant)[1])
      expected.append(np.mean(values))
    assert result["user_gain_ndcg@10"] == pytest.approx(np.mean(expected))
    if scale == 0:
      assert result["user_gain_ndcg@10"] == 0
