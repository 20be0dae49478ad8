"""Tests for ctxtag.sources.splits: seeded random and cold-start splits."""

import numpy as np
import pytest

from ctxtag import errors
from ctxtag.sources import pairs as pairs_lib
from ctxtag.sources import splits


def _table(seed=0, tracks=300):
  """Tracks with 5-10 users each, users drawn from a pool of 900."""
  rng = np.random.default_rng(seed)
  songs, users = [], []
  for song in range(tracks):
    chosen = rng.choice(900, rng.integers(5, 11), replace=False)
    songs += [song] * len(chosen)
    users += chosen.tolist()
  return pairs_lib.Pairs(songs, users, rng.integers(0, 10, len(songs)))


def _keys(table):
  return table.song_id * 10_000 + table.user_id


def _shares(result):
  total = sum(len(t) for t in result.values())
  return np.array([len(result[name]) / total for name in splits.SPLITS])


@pytest.mark.parametrize("strategy", list(splits.STRATEGIES))
def test_every_pair_is_in_exactly_one_split_in_table_order(strategy):
  table = _table()
  result = splits.split(table, strategy, seed=0)
  assert list(result) == ["train", "validation", "test"]
  keys = np.concatenate([_keys(result[name]) for name in splits.SPLITS])
  np.testing.assert_array_equal(np.sort(keys), np.sort(_keys(table)))
  row_of_key = {key: row for row, key in enumerate(_keys(table).tolist())}
  for part in result.values():
    rows = [row_of_key[key] for key in _keys(part).tolist()]
    assert rows == sorted(rows)


def test_random_split_sizes_are_exact():
  table = pairs_lib.Pairs(np.arange(2000), np.arange(2000) % 700,
                          np.zeros(2000))
  result = splits.split(table, "random", seed=4)
  assert [len(result[name]) for name in splits.SPLITS] == [1120, 320, 560]
  summary = splits.describe(result)
  assert summary["overlap"]["users"]["train&test"] > 0


def test_cold_user_keeps_users_apart():
  result = splits.split(_table(), "cold_user", seed=1)
  summary = splits.describe(result)
  assert summary["overlap"]["users"] == {
      "train&validation": 0, "train&test": 0, "validation&test": 0}
  assert summary["overlap"]["tracks"]["train&test"] > 0
  # Users hold few pairs each, so the shares land close to the targets.
  np.testing.assert_allclose(_shares(result), splits.DEFAULT_FRACTIONS,
                             atol=0.01)


def test_cold_track_keeps_tracks_apart():
  result = splits.split(_table(), "cold_track", seed=1,
                        fractions=(0.6, 0.2, 0.2))
  summary = splits.describe(result)
  assert summary["overlap"]["tracks"] == {
      "train&validation": 0, "train&test": 0, "validation&test": 0}
  # Each boundary is off by at most half a track (<= 5 of ~2250 pairs).
  np.testing.assert_allclose(_shares(result), (0.6, 0.2, 0.2), atol=0.005)


@pytest.mark.parametrize("strategy", list(splits.STRATEGIES))
def test_deterministic_given_seed(strategy):
  table = _table()
  first = splits.split(table, strategy, seed=7)
  second = splits.split(table, strategy, seed=7)
  other = splits.split(table, strategy, seed=8)
  for name in splits.SPLITS:
    np.testing.assert_array_equal(_keys(first[name]), _keys(second[name]))
  assert not np.array_equal(_keys(first["test"]), _keys(other["test"]))


def test_describe_counts_by_hand():
  result = {
      "train": pairs_lib.Pairs([1, 1, 2], [10, 11, 10], [0, 1, 2]),
      "validation": pairs_lib.Pairs([2, 3], [12, 12], [0, 0]),
      "test": pairs_lib.Pairs([4], [10], [3]),
  }
  summary = splits.describe(result)
  assert summary["train"] == {"pairs": 3, "tracks": 2, "users": 2}
  assert summary["validation"] == {"pairs": 2, "tracks": 2, "users": 1}
  assert summary["test"] == {"pairs": 1, "tracks": 1, "users": 1}
  assert summary["overlap"] == {
      "users": {"train&validation": 0, "train&test": 1,
                "validation&test": 0},
      "tracks": {"train&validation": 1, "train&test": 0,
                 "validation&test": 0}}


def test_tiny_tables_split_without_error():
  table = pairs_lib.Pairs([1, 2], [10, 11], [0, 0])
  result = splits.split(table, "cold_user", seed=0)
  assert sum(len(part) for part in result.values()) == 2
  empty = splits.split(pairs_lib.Pairs.concatenate([]), "random")
  assert all(len(part) == 0 for part in empty.values())


@pytest.mark.parametrize("fractions", [
    (0.5, 0.5, 0.1), (0.6, 0.4, 0.0), (1.0,), (0.7, -0.1, 0.4),
])
def test_invalid_fractions_are_config_errors(fractions):
  with pytest.raises(errors.ConfigError, match="split_fractions must be"):
    splits.split(_table(tracks=5), "random", fractions=fractions)


def test_unknown_strategy_is_a_config_error():
  with pytest.raises(errors.ConfigError,
                     match="split_strategy must be one of random, cold_user,"
                     " cold_track, got 'given'"):
    splits.split(_table(tracks=5), "given")
