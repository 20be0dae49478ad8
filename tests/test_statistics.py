"""The statistics beyond the paper against independent computations: per-user
loops of scikit-learn, explicit resampled data sets, scipy, enumeration and
hand-worked cases."""

import itertools

import numpy as np
import pytest
import scipy.stats
from sklearn import metrics as skm

from ctxtag import errors
from ctxtag import files
from ctxtag import labels
from ctxtag import study
from ctxtag import tables
from ctxtag.evaluation import auc
from ctxtag.evaluation import bootstrap
from ctxtag.evaluation import ceiling
from ctxtag.evaluation import protocols
from ctxtag.evaluation import ranking
from ctxtag.evaluation import thresholds
from ctxtag.evaluation import users as users_lib

RESAMPLES = 60


def _world(seed, num_users, num_tracks, pairs_per_track=(2, 6)):
  """Pairs with a per-user taste, so that users differ and pairs of a user
  are alike; track and pair scores of three models of unequal skill."""
  rng = np.random.default_rng(seed)
  per_track = rng.integers(*pairs_per_track, size=num_tracks)
  song_P = np.repeat(np.arange(num_tracks), per_track)
  user_P = np.concatenate([rng.choice(num_users, n, replace=False)
                           for n in per_track])
  taste = rng.normal(size=(num_users, 10)) * 1.5
  track = rng.normal(size=(num_tracks, 10))
  logits = taste[user_P] + track[song_P]
  label_P = np.argmax(logits + rng.gumbel(size=logits.shape), axis=1)
  truth = np.eye(10, dtype=bool)[label_P]
  track_scores = 1 / (1 + np.exp(-(track + rng.normal(size=track.shape))))
  softmax = lambda x: np.exp(x) / np.exp(x).sum(axis=1, keepdims=True)
  pair_models = {
      "audio_user": softmax(logits + rng.normal(size=logits.shape)),
      "user": softmax(taste[user_P] + rng.normal(size=logits.shape)),
      "oracle": softmax(logits)}
  return dict(song=song_P, user=user_P * 3 + 11, label=label_P, truth=truth,
              track_scores=track_scores, pair_models=pair_models)


def _tables(world):
  gt = tables.Table("gt.csv", world["song"], world["user"],
                    world["truth"].astype(np.float64))
  audio = tables.Table("audio.csv", np.arange(len(world["track_scores"])),
                       None, world["track_scores"])
  pairs = {name: tables.Table(f"{name}.csv", world["song"], world["user"],
                              scores)
           for name, scores in world["pair_models"].items()}
  return gt, audio, pairs


def _evaluate(gt, audio, pairs, validation=None, **settings) -> dict:
  """study.evaluate of the tables: `audio` (or None) and `pairs`' models."""
  scores = dict(pairs, **({} if audio is None else {"audio": audio}))
  return study.evaluate(study.Inputs(gt, scores, validation, **settings))


@pytest.fixture(scope="module")
def world():
  return _world(0, num_users=80, num_tracks=120)


@pytest.fixture(scope="module")
def results(world):
  gt, audio, pairs = _tables(world)
  return _evaluate(gt, audio, pairs, prior_C=np.full(10, 0.1),
                        settings=bootstrap.Settings(RESAMPLES, seed=3))


# --- Per-user sums and ranking ---------------------------------------------


def test_users_sum_and_mean_match_a_loop(world):
  users = users_lib.Users.from_ids(world["user"])
  values = np.random.default_rng(1).normal(size=(len(world["user"]), 3))
  for row, user in enumerate(np.unique(world["user"])):
    mine = world["user"] == user
    np.testing.assert_allclose(users.sum(values)[row], values[mine].sum(0))
    np.testing.assert_allclose(users.mean(values)[row], values[mine].mean(0))
    assert users.pairs_U[row] == mine.sum()


def test_ranking_hand_worked_with_ties():
  truth = np.eye(10, dtype=bool)[[1, 2, 0]]
  scores = np.zeros((3, 10))
  scores[0, :2] = 0.5         # true context tied for first: r = 1
  scores[1, [0, 1, 2]] = [0.4, 0.3, 0.2]  # two scored higher: r = 3
  scores[2, 1:6] = 0.9        # five higher: r = 6
  np.testing.assert_array_equal(ranking.true_rank(truth, scores), [1, 3, 6])
  # One user with the first two pairs, another with the third.
  result = ranking.ranking([7, 7, 8], truth, scores)
  assert result["hit@1"] == pytest.approx((0.5 + 0) / 2)
  assert result["hit@3"] == pytest.approx((1 + 0) / 2)
  assert result["mrr"] == pytest.approx(((1 + 1 / 3) / 2 + 1 / 6) / 2)
  assert result["ndcg@3"] == pytest.approx(((1 + 0.5) / 2 + 0) / 2)


def test_ranking_matches_sklearn_per_user(world):
  truth, scores = world["truth"], world["pair_models"]["audio_user"]
  expected = {name: [] for name in ranking.METRICS}
  for user in np.unique(world["user"]):
    g, s = truth[world["user"] == user], scores[world["user"] == user]
    y = g.argmax(axis=1)
    expected["hit@1"].append(skm.top_k_accuracy_score(
        y, s, k=1, labels=np.arange(10)))
    expected["hit@3"].append(skm.top_k_accuracy_score(
        y, s, k=3, labels=np.arange(10)))
    # With one relevant label and no ties, its average precision is 1/r.
    expected["mrr"].append(skm.label_ranking_average_precision_score(g, s))
    expected["ndcg@3"].append(np.mean([skm.ndcg_score(g[i:i + 1], s[i:i + 1],
                                                      k=3)
                                       for i in range(len(g))]))
  result = ranking.ranking(world["user"], truth, scores)
  for name in ranking.METRICS:
    assert result[name] == pytest.approx(np.mean(expected[name]))


# --- AUC placements ---------------------------------------------------------


def test_placements_sum_to_mann_whitney_u_with_ties(world):
  truth = world["truth"]
  scores = world["pair_models"]["user"].round(2)  # rounding gives ties
  auc_C, placement = auc.placements(truth, scores)
  for c in range(10):
    u = scipy.stats.mannwhitneyu(scores[truth[:, c], c],
                                 scores[~truth[:, c], c]).statistic
    assert placement[truth[:, c], c].sum() == pytest.approx(u)
    assert placement[~truth[:, c], c].sum() == pytest.approx(u)
    assert auc_C[c] == pytest.approx(skm.roc_auc_score(truth[:, c],
                                                       scores[:, c]))


# --- Bootstrap over users ---------------------------------------------------


def test_counts_are_the_draws_and_chunking_changes_nothing(monkeypatch):
  counts = bootstrap.counts(7, range(5), seed=2)
  uniform = np.random.Generator(np.random.PCG64(2)).random(35).reshape(5, 7)
  for row in range(5):
    np.testing.assert_array_equal(
        counts[row], np.bincount(np.floor(uniform[row] * 7).astype(int),
                                 minlength=7))
    np.testing.assert_array_equal(bootstrap.draws(7, row, seed=2),
                                  np.floor(uniform[row] * 7))
  values = np.random.default_rng(0).normal(size=(7, 3))
  whole = bootstrap.resampled_sums(values, bootstrap.Settings(50, 2))
  monkeypatch.setattr(bootstrap, "_CHUNK_ENTRIES", 20)  # chunks of 2
  np.testing.assert_allclose(
      bootstrap.resampled_sums(values, bootstrap.Settings(50, 2)), whole)
  np.testing.assert_allclose(whole, bootstrap.counts(7, range(50), 2)
                             @ values)


def _resampled_world(world, resample, seed):
  """The data set of one resample, built explicitly: the drawn users' pairs,
  each draw a user of its own (a user drawn twice is two users)."""
  user_ids = np.unique(world["user"])
  drawn = user_ids[bootstrap.draws(len(user_ids), resample, seed)]
  rows = [np.flatnonzero(world["user"] == u) for u in drawn]
  index = np.concatenate(rows)
  new_users = np.repeat(np.arange(len(rows)), [len(r) for r in rows])
  return index, new_users


def _quantiles(values):
  return np.quantile(values, [0.025, 0.975])


def test_intervals_equal_explicit_resampling(world, results):
  song_ids, track_P, _ = study.track_truth(_tables(world)[0])
  pair_audio = world["track_scores"][song_ids][track_P]
  scores = dict(world["pair_models"], audio=pair_audio)
  expected = {}
  for b in range(RESAMPLES):
    index, users = _resampled_world(world, b, seed=3)
    truth = world["truth"][index]
    for name, model_scores in scores.items():
      s = model_scores[index]
      sat = protocols.satisfaction(users, truth, protocols.one_hot_argmax(s))
      rank = ranking.ranking(users, truth, s)
      for metric in protocols.SATISFACTION_METRICS:
        expected.setdefault(("satisfaction", name, metric), []).append(
            sat[metric])
      for metric in ranking.METRICS:
        expected.setdefault(("ranking", name, metric), []).append(
            rank[metric])
    predicted = protocols.one_hot_argmax(scores["audio_user"][index])
    expected.setdefault(("user_sg", "f1"), []).append(skm.f1_score(
        truth, predicted, average="macro", zero_division=0))
    expected.setdefault(("mo_sg", "precision"), []).append(
        skm.precision_score(truth, pair_audio[index] >= 0.5, average="macro",
                            zero_division=0))
  for key, values in expected.items():
    if len(key) == 3:
      kind, name, metric = key
      got = results[kind][name][f"{metric}_ci"]
    else:
      protocol, metric = key
      got = results[protocol]["average"][f"{metric}_ci"]
    np.testing.assert_allclose(got, _quantiles(values), atol=1e-12,
                               err_msg=str(key))


def test_auc_interval_is_close_to_the_exact_bootstrap():
  # First order in the users' counts: compare with the exact weighted AUC of
  # every resample (scikit-learn with sample weights) on 600 users.
  world = _world(1, num_users=600, num_tracks=900)
  gt, _, pairs = _tables(world)
  settings = bootstrap.Settings(100, seed=5)
  result = _evaluate(gt, None, {"user": pairs["user"]},
                          settings=settings)
  users = users_lib.Users.from_ids(world["user"])
  counts = bootstrap.counts(users.count, range(100), seed=5)
  scores = world["pair_models"]["user"]
  exact = [np.mean([skm.roc_auc_score(world["truth"][:, c], scores[:, c],
                                      sample_weight=row[users.index_P])
                    for c in range(10)]) for row in counts]
  np.testing.assert_allclose(result["user_only_sg"]["average"]["auc_ci"],
                             _quantiles(exact), atol=1e-3)
  width = np.ptp(_quantiles(exact))
  assert 0.005 < width < 0.1  # a real interval, matched to within 1e-3


def test_comparison_is_paired_over_the_same_users(world, results):
  comparison = results["comparisons"]["audio_user_vs_user"]["f1"]
  assert comparison["difference"] == pytest.approx(
      results["satisfaction"]["audio_user"]["f1"]
      - results["satisfaction"]["user"]["f1"])
  differences, per_user = [], {}
  for name in ("audio_user", "user"):
    predicted = protocols.one_hot_argmax(world["pair_models"][name])
    per_user[name] = np.array([
        np.mean([skm.f1_score(world["truth"][rows][:, c],
                              predicted[rows][:, c], zero_division=0)
                 for c in np.flatnonzero(world["truth"][rows].any(0))])
        for rows in (world["user"] == u for u in np.unique(world["user"]))])
  delta = per_user["audio_user"] - per_user["user"]
  for b in range(RESAMPLES):
    drawn = bootstrap.draws(len(delta), b, seed=3)
    differences.append(delta[drawn].mean())
  np.testing.assert_allclose(comparison["ci"], _quantiles(differences),
                             atol=1e-12)
  delta = delta.round(12)  # float noise aside, as bootstrap.wilcoxon_p does
  assert comparison["p_value"] == pytest.approx(
      scipy.stats.wilcoxon(delta[delta != 0]).pvalue)
  assert set(results["comparisons"]) == {
      "audio_user_vs_audio", "user_vs_audio", "audio_user_vs_user"}


def test_wilcoxon_matches_exact_enumeration():
  differences = np.array([0.3, -0.1, 0.25, 0.4, -0.05, 0.6, 0.0])
  nonzero = differences[differences != 0]
  ranks = scipy.stats.rankdata(np.abs(nonzero))
  observed = ranks[nonzero > 0].sum()
  mean = ranks.sum() / 2
  # All 2^n sign patterns are equally likely under the null.
  statistics = np.array([sum(r for r, s in zip(ranks, signs) if s)
                         for signs in itertools.product([0, 1],
                                                        repeat=len(ranks))])
  p_exact = np.mean(np.abs(statistics - mean) >= abs(observed - mean))
  assert bootstrap.wilcoxon_p(differences) == pytest.approx(p_exact)


def test_identical_models_differ_by_zero_with_p_one(world):
  gt, _, pairs = _tables(world)
  result = _evaluate(
      gt, None, {"audio_user": pairs["user"], "user": pairs["user"]},
      settings=bootstrap.Settings(20))
  for entry in result["comparisons"]["audio_user_vs_user"].values():
    assert entry == {"difference": 0.0, "ci": [0.0, 0.0], "p_value": 1.0}
  assert bootstrap.wilcoxon_p(np.zeros(5)) == 1.0


def test_no_resamples_gives_undefined_intervals(world):
  gt, _, pairs = _tables(world)
  result = _evaluate(gt, None, {"user": pairs["user"]},
                          settings=bootstrap.Settings(0))
  assert np.isnan(result["satisfaction"]["user"]["f1_ci"]).all()
  assert np.isnan(result["user_only_sg"]["average"]["auc_ci"]).all()


# --- Thresholds tuned on validation -----------------------------------------


def test_tuned_threshold_maximises_f1_like_a_brute_force_search(world):
  truth = world["truth"]
  scores = world["pair_models"]["user"].round(2)  # ties between candidates
  scores[:, 9] = 0.3
  truth = truth.copy()
  truth[:, 8] = False  # a context without positives keeps 0.5
  tuned = thresholds.tune(truth, scores)
  for c in range(8):
    candidates = np.unique(scores[:, c])
    f1 = np.array([skm.f1_score(truth[:, c], scores[:, c] >= t)
                   for t in candidates])
    assert skm.f1_score(truth[:, c], scores[:, c] >= tuned[c]) == (
        pytest.approx(f1.max()))
    assert tuned[c] == candidates[np.flatnonzero(f1 == f1.max()).max()]
  assert tuned[8] == 0.5
  assert tuned[9] == 0.3  # one tie group: predict all


def test_tuned_protocols_apply_validation_thresholds_to_test():
  test_world = _world(2, 80, 120)
  validation_world = _world(3, 80, 120)
  gt, audio, _ = _tables(test_world)
  validation_gt, validation_audio, _ = _tables(validation_world)
  result = _evaluate(gt, audio, {}, study.Validation(
      validation_gt, {"audio": validation_audio}), settings=bootstrap.Settings(0))
  _, track_P, union = study.track_truth(validation_gt)
  val_scores = validation_world["track_scores"]
  mg = thresholds.tune(union, val_scores)
  sg = thresholds.tune(validation_world["truth"], val_scores[track_P])
  assert list(result["mo_mg_tuned"]["thresholds"].values()) == mg.tolist()
  assert list(result["mo_sg_tuned"]["thresholds"].values()) == sg.tolist()
  _, test_track_P, test_union = study.track_truth(gt)
  scores = test_world["track_scores"]
  expected_mg = protocols.binary_metrics(test_union, scores >= mg, scores)
  assert result["mo_mg_tuned"]["average"] == pytest.approx(
      expected_mg["average"])
  pair_scores = scores[test_track_P]
  expected_sg = protocols.binary_metrics(test_world["truth"],
                                         pair_scores >= sg, pair_scores)
  assert {k: v for k, v in result["mo_sg_tuned"]["average"].items()
          if not k.endswith("_ci")} == pytest.approx(expected_sg["average"])


# --- Share of the ceiling ---------------------------------------------------


def test_share_closed_forms():
  assert ceiling.share(0.3, 0.1, 0.5) == pytest.approx(0.5)
  assert ceiling.share(0.0, 0.1, 0.5) == pytest.approx(-0.25)
  assert np.isnan(ceiling.share(0.3, 0.5, 0.5))
  np.testing.assert_allclose(ceiling.prior([0, 0, 1, 9]),
                             [0.5, 0.25] + [0] * 7 + [0.25])


def test_ceiling_share_of_the_oracle_is_one_and_of_the_prior_zero(world):
  gt, _, pairs = _tables(world)
  prior = ceiling.prior(world["label"])
  prior_scores = np.broadcast_to(prior, world["truth"].shape)
  models = {"audio_user": pairs["oracle"], "oracle": pairs["oracle"],
            "user": tables.Table("p.csv", world["song"], world["user"],
                                 np.array(prior_scores))}
  result = _evaluate(gt, None, models, prior_C=prior,
                          settings=bootstrap.Settings(0))["ceiling_share"]
  for group in ceiling.GROUPS:
    for metric, value in result["share"]["audio_user"][group].items():
      assert value == pytest.approx(1.0), (group, metric)
    for metric, value in result["share"]["user"][group].items():
      assert value == pytest.approx(0.0), (group, metric)
  # The prior's own metrics, by hand: it always predicts its argmax.
  assert result["baseline"]["sg"]["auc"] == 0.5
  top = int(np.argmax(prior))
  assert result["baseline"]["ranking"]["hit@1"] == pytest.approx(np.mean([
      np.mean(world["label"][world["user"] == u] == top)
      for u in np.unique(world["user"])]))
  assert result["prior"] == dict(zip(labels.LABELS, prior.tolist()))


def test_ceiling_needs_an_oracle_and_a_prior(world, results):
  gt, audio, pairs = _tables(world)
  del pairs["oracle"]
  assert "ceiling_share" not in _evaluate(
      gt, audio, pairs, prior_C=np.full(10, 0.1),
      settings=bootstrap.Settings(0))
  assert set(results["ceiling_share"]["share"]) == {"audio", "audio_user",
                                                    "user"}


# --- MO-MG's ground truth over every split (mo_mg_truth) --------------------


def test_mo_mg_over_all_splits_matches_a_loop_and_scikit_learn(world):
  gt, audio, pairs = _tables(world)
  rng = np.random.default_rng(7)
  # Other splits: pairs of half the test tracks and of tracks not in test
  # (ids 500+), which MO-MG must ignore.
  other_song = np.concatenate([rng.choice(60, 150), 500 + np.arange(20)])
  other_label = rng.integers(0, 10, size=len(other_song))
  others = [tables.Table(f"{name}.csv", song, np.arange(len(song)) + 10**6,
                         np.eye(10)[label])
            for name, song, label in (
                ("train", other_song[:100], other_label[:100]),
                ("validation", other_song[100:], other_label[100:]))]
  union = {s: set() for s in range(len(world["track_scores"]))}
  for song, label in zip(world["song"], world["label"]):
    union[song].add(label)
  for song, label in zip(other_song, other_label):
    if song in union:
      union[song].add(label)
  truth = np.array([[c in union[s] for c in range(10)] for s in sorted(union)])
  scores = world["track_scores"]
  result = _evaluate(gt, audio, {}, mo_mg_truth="all_splits",
                          other_splits=others,
                          settings=bootstrap.Settings(0))
  assert result["mo_mg_truth"] == "all_splits"
  f1 = skm.f1_score(truth, scores >= 0.5, average=None, zero_division=0)
  auc_C = [skm.roc_auc_score(truth[:, c], scores[:, c]) for c in range(10)]
  np.testing.assert_allclose(result["mo_mg"]["average"]["f1"], f1.mean())
  np.testing.assert_allclose(result["mo_mg"]["average"]["auc"],
                             np.mean(auc_C))
  assert result["context_counts"]["mo_mg_tracks"] == dict(
      zip(labels.LABELS, truth.sum(axis=0).tolist()))
  # The test pairs alone (the default) give the narrower union; every other
  # protocol is the same either way.
  default = _evaluate(gt, audio, {}, settings=bootstrap.Settings(0))
  test_truth = np.zeros_like(truth)
  test_truth[world["song"], world["label"]] = True
  assert default["mo_mg_truth"] == "test"
  np.testing.assert_allclose(
      default["mo_mg"]["average"]["f1"],
      skm.f1_score(test_truth, scores >= 0.5, average=None,
                   zero_division=0).mean())
  assert test_truth.sum() < truth.sum()
  # (strict_json: the undefined intervals are NaN, which equals nothing.)
  assert files.strict_json(default["so_sg"]) == files.strict_json(
      result["so_sg"])
  with pytest.raises(errors.UserError, match="other splits' ground truth"):
    _evaluate(gt, audio, {}, mo_mg_truth="all_splits")
  with pytest.raises(errors.UserError, match="expected one of"):
    _evaluate(gt, audio, {}, mo_mg_truth="every")
