"""The two-level bootstrap over training seeds and test users
(ctxtag.evaluation.bootstrap): against a brute-force loop, its reductions to
the one-level bootstraps, and a closed form."""

import numpy as np
import pytest

from ctxtag.evaluation import bootstrap


def _per_seed(num_seeds, users, columns=3, seed=0):
  """Per-user values of each seed; `users` an int (shared) or a list."""
  rng = np.random.default_rng(seed)
  counts = users if isinstance(users, list) else [users] * num_seeds
  return [rng.normal(size=(n, columns)) + s for s, n in enumerate(counts)]


def _brute_force(per_seed, settings, shared_users):
  """The module docstring's resample, one at a time, from the raw streams."""
  num_seeds = len(per_seed)
  uniform = np.random.Generator(np.random.PCG64(
      [settings.seed, bootstrap.SEED_STREAM])).random(
          (settings.resamples, num_seeds))
  values = []
  for b in range(settings.resamples):
    means = []
    for s in np.floor(uniform[b] * num_seeds).astype(int):
      num_users = len(per_seed[s])
      users = bootstrap.draws(num_users, b, settings.seed if shared_users
                              else settings.seed + s)
      means.append(per_seed[s][users].mean(axis=0))
    values.append(np.mean(means, axis=0))
  return np.array(values)


@pytest.mark.parametrize("shared_users,users", [(True, 7), (False, [5, 8, 6])])
def test_two_level_matches_a_brute_force_loop(shared_users, users):
  per_seed = _per_seed(3, users)
  settings = bootstrap.Settings(resamples=60, seed=4, confidence=0.8)
  resampled = bootstrap.two_level_resampled_means(per_seed, settings,
                                                  shared_users)
  np.testing.assert_allclose(
      resampled, _brute_force(per_seed, settings, shared_users), rtol=1e-12,
      atol=1e-12)
  mean, cis, seeds = bootstrap.two_level(per_seed, settings, shared_users)
  np.testing.assert_allclose(seeds, [v.mean(axis=0) for v in per_seed])
  np.testing.assert_allclose(mean, np.mean([v.mean(axis=0)
                                            for v in per_seed], axis=0))
  np.testing.assert_allclose(cis, bootstrap.intervals(resampled, 0.8))


def test_seed_draws_are_one_stream():
  whole = bootstrap.seed_draws(4, range(0, 9), seed=2)
  np.testing.assert_array_equal(bootstrap.seed_draws(4, range(3, 7), 2),
                                whole[3:7])
  assert whole.min() >= 0 and whole.max() < 4
  # Not the users' stream: the same seed does not draw the same indices.
  assert not np.array_equal(
      whole, np.stack([bootstrap.draws(4, b, 2) for b in range(9)]))


@pytest.mark.parametrize("shared_users", [True, False])
def test_one_seed_is_the_one_level_bootstrap_over_users(shared_users):
  values = _per_seed(1, 11)[0]
  settings = bootstrap.Settings(resamples=200, seed=5)
  np.testing.assert_allclose(
      bootstrap.two_level_resampled_means([values], settings, shared_users),
      bootstrap.resampled_sums(values, settings) / len(values), rtol=1e-12)


def test_identical_seeds_with_shared_users_are_the_user_bootstrap():
  values = _per_seed(1, 9)[0]
  settings = bootstrap.Settings(resamples=100, seed=1)
  np.testing.assert_allclose(
      bootstrap.two_level_resampled_means([values] * 4, settings, True),
      bootstrap.resampled_sums(values, settings) / len(values), rtol=1e-12)


@pytest.mark.parametrize("shared_users", [True, False])
def test_one_user_is_the_bootstrap_over_seeds(shared_users):
  seed_values = np.array([[0.2], [0.5], [0.3], [0.9], [0.4]])
  settings = bootstrap.Settings(resamples=20_000, seed=3)
  resampled = bootstrap.two_level_resampled_means(
      [v[None] for v in seed_values], settings, shared_users)
  drawn = bootstrap.seed_draws(5, range(settings.resamples), settings.seed)
  np.testing.assert_allclose(resampled[:, 0],
                             seed_values[drawn, 0].mean(axis=1), rtol=1e-12)
  # Closed form: the bootstrap variance of a mean of n values is their
  # population variance over n.
  assert resampled.var() == pytest.approx(seed_values.var() / 5, rel=0.05)
  assert resampled.mean() == pytest.approx(seed_values.mean(), abs=0.005)


def test_shared_users_need_the_same_users():
  with pytest.raises(ValueError, match="same users in every seed"):
    bootstrap.two_level_resampled_means(_per_seed(2, [3, 4]),
                                        bootstrap.Settings(resamples=5), True)
  with pytest.raises(ValueError, match="no seeds"):
    bootstrap.two_level_resampled_means([], bootstrap.Settings(), True)


def test_no_resamples_gives_undefined_intervals():
  mean, cis, _ = bootstrap.two_level(_per_seed(2, 4, columns=1),
                                     bootstrap.Settings(resamples=0), True)
  assert np.isfinite(mean).all() and np.isnan(cis).all()
