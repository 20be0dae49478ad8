"""The protocols against scikit-learn and per-user loops on fixtures."""

import numpy as np
import pytest
from sklearn import metrics as skm

from ctxtag import evaluation
from ctxtag import labels
from ctxtag.evaluation import evaluators
from ctxtag.evaluation import users as evaluation_users


@pytest.fixture
def fixture():
  rng = np.random.default_rng(0)
  num_pairs, num_users = 400, 90
  label_P = rng.integers(0, 10, size=num_pairs)
  truth = np.eye(10, dtype=bool)[label_P]
  scores = rng.uniform(size=(num_pairs, 10)).round(1)  # rounding gives ties
  users = rng.integers(0, num_users, size=num_pairs) * 7 + 1000
  return truth, scores, users


def test_binary_metrics_match_sklearn(fixture):
  truth, scores, _ = fixture
  predicted = scores >= 0.5
  result = evaluation.binary_metrics(truth, predicted, scores)
  for i, label in enumerate(labels.LABELS):
    row = result["per_label"][label]
    assert row["auc"] == pytest.approx(skm.roc_auc_score(truth[:, i],
                                                         scores[:, i]))
    assert row["recall"] == pytest.approx(
        skm.recall_score(truth[:, i], predicted[:, i], zero_division=0))
    assert row["precision"] == pytest.approx(
        skm.precision_score(truth[:, i], predicted[:, i], zero_division=0))
    assert row["f1"] == pytest.approx(
        skm.f1_score(truth[:, i], predicted[:, i], zero_division=0))
  assert result["average"]["auc"] == pytest.approx(
      skm.roc_auc_score(truth, scores, average="macro"))
  assert result["average"]["f1"] == pytest.approx(
      skm.f1_score(truth, predicted, average="macro", zero_division=0))


def test_auc_of_a_constant_column_is_nan_and_left_out_of_the_mean():
  truth = np.zeros((6, 10), bool)
  truth[:3, 1:] = True
  scores = np.tile(np.linspace(0, 1, 6)[:, None], (1, 10))
  auc = evaluation.auc_per_label(truth, scores)
  assert np.isnan(auc[0]) and np.allclose(auc[1:], 0.0)


def _sg(protocol, truth, scores, user_ids):
  """The library's SG protocol `protocol`, from per-user counts."""
  return evaluation.single_groundtruth(
      evaluation_users.Users.from_ids(user_ids), truth,
      evaluators.decision(protocol)(scores),
      evaluation.auc_per_label(truth, scores))


def test_single_output_protocols_use_the_argmax(fixture):
  truth, scores, users = fixture
  result, tp_UxC, fp_UxC = _sg("so_sg", truth, scores, users)
  argmax = scores.argmax(axis=1)
  for i, label in enumerate(labels.LABELS):
    for metric, sklearn_metric in (("recall", skm.recall_score),
                                   ("precision", skm.precision_score),
                                   ("f1", skm.f1_score)):
      assert result["per_label"][label][metric] == pytest.approx(
          sklearn_metric(truth[:, i], argmax == i, zero_division=0))
    assert result["per_label"][label]["auc"] == pytest.approx(
        skm.roc_auc_score(truth[:, i], scores[:, i]))
  assert _sg("user_sg", truth, scores, users)[0] == result
  # The per-user counts are each user's own, by a loop.
  for row, user in enumerate(np.unique(users)):
    mine = users == user
    hits = truth[mine] & (argmax[mine, None] == np.arange(10))
    np.testing.assert_array_equal(tp_UxC[row], hits.sum(axis=0))
    np.testing.assert_array_equal(
        fp_UxC[row], (~truth[mine] & (argmax[mine, None] == np.arange(10))
                      ).sum(axis=0))


def test_fake_audio_model_that_says_yes_everywhere():
  # A classic-protocol failure the paper points out: scores of 0.9 for
  # every context give perfect recall, precision at the base rate.
  truth = np.eye(10, dtype=bool)[np.arange(200) % 10]
  result, _, _ = _sg("mo_sg", truth, np.full((200, 10), 0.9),
                     np.arange(200) % 7)
  assert result["average"]["recall"] == 1.0
  assert result["average"]["precision"] == pytest.approx(0.1)
  assert result["average"]["f1"] == pytest.approx(2 * 0.1 / 1.1)
  assert result["average"]["auc"] == pytest.approx(0.5)


def _satisfaction_by_loop(users, truth, predicted):
  per_user = {name: [] for name in evaluation.SATISFACTION_METRICS}
  for user in np.unique(users):
    rows = users == user
    g, p = truth[rows], predicted[rows]
    active = np.flatnonzero(g.any(axis=0))
    per_user["accuracy"].append(np.mean(
        [skm.accuracy_score(g[:, c], p[:, c]) for c in active]))
    per_user["recall"].append(np.mean(
        [skm.recall_score(g[:, c], p[:, c], zero_division=0) for c in active]))
    per_user["precision"].append(np.mean(
        [skm.precision_score(g[:, c], p[:, c], zero_division=0)
         for c in active]))
    per_user["f1"].append(np.mean(
        [skm.f1_score(g[:, c], p[:, c], zero_division=0) for c in active]))
  return {name: np.mean(values) for name, values in per_user.items()}


def test_satisfaction_matches_a_per_user_loop_of_sklearn(fixture):
  truth, scores, users = fixture
  predicted = evaluation.one_hot_argmax(scores)
  result = evaluation.satisfaction(users, truth, predicted)
  expected = _satisfaction_by_loop(users, truth, predicted)
  for name in evaluation.SATISFACTION_METRICS:
    assert result[name] == pytest.approx(expected[name])
  assert result["users"] == len(np.unique(users))


def test_satisfaction_closed_form_for_one_user():
  # One user, 4 tracks, truth contexts (0, 0, 1, 2), predictions (0, 1, 1, 3).
  truth = np.eye(10, dtype=bool)[[0, 0, 1, 2]]
  predicted = np.eye(10, dtype=bool)[[0, 1, 1, 3]]
  result = evaluation.satisfaction([5, 5, 5, 5], truth, predicted)
  # Active contexts 0, 1, 2. Context 0: tp 1, fn 1, fp 0 -> acc 3/4, r 1/2,
  # p 1, f1 2/3. Context 1: tp 1, fp 1 -> acc 3/4, r 1, p 1/2, f1 2/3.
  # Context 2: tp 0, fn 1 -> acc 3/4, r 0, p 0 (nothing predicted), f1 0.
  assert result["accuracy"] == pytest.approx(0.75)
  assert result["recall"] == pytest.approx((0.5 + 1 + 0) / 3)
  assert result["precision"] == pytest.approx((1 + 0.5 + 0) / 3)
  assert result["f1"] == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)
