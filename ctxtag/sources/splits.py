"""Seeded train/validation/test splits of a pair table.

  random      pairs drawn at random (the paper's): a user or a track may
              appear in several splits;
  cold_user   whole users drawn into splits: no validation or test user
              appears in train (nor in the other of the two);
  cold_track  whole tracks drawn into splits: no validation or test track
              appears in train (nor in the other of the two).

Fractions are over pairs. The cold strategies shuffle the users (tracks) and
cut the sequence where the running count of pairs crosses each fraction, a
group going to the split holding its middle pair; so each split is within
half the largest group of its target. Each split keeps the table's row order.
On tiny tables a split can be empty.
"""

import numpy as np

from ctxtag import errors
from ctxtag.sources import pairs as pairs_lib

SPLITS = ("train", "validation", "test")
# Shares of the public release's splits (docs/paper.md),
# train/validation/test.
DEFAULT_FRACTIONS = (0.56, 0.16, 0.28)


def check_fractions(fractions) -> np.ndarray:
  """The fractions as float64[3]; ConfigError unless positive, summing to 1."""
  values = np.asarray(fractions, np.float64).ravel()
  if values.shape != (3,) or not np.all(values > 0) or not np.isclose(
      values.sum(), 1.0, rtol=0, atol=1e-6):
    raise errors.ConfigError(
        "split_fractions must be three positive numbers (train, validation,"
        f" test) summing to 1, got {tuple(np.asarray(fractions).ravel())}")
  return values


def _cut(counts_G: np.ndarray, fractions: np.ndarray) -> np.ndarray:
  """The split of each group, groups in the given order, by running count."""
  total = counts_G.sum()
  middle_G = np.cumsum(counts_G) - counts_G / 2
  boundaries = np.cumsum(fractions)[:-1] * total
  return np.searchsorted(boundaries, middle_G, side="right")


def _by_group(group_id: np.ndarray, fractions: np.ndarray,
              rng: np.random.Generator) -> np.ndarray:
  """The split of each row, whole groups (users or tracks) at a time."""
  values, group_of_row, counts_G = np.unique(
      group_id, return_inverse=True, return_counts=True)
  order = rng.permutation(len(values))
  split_G = np.empty(len(values), np.int64)
  split_G[order] = _cut(counts_G[order], fractions)
  return split_G[group_of_row]


def _random(table: pairs_lib.Pairs, fractions, rng) -> np.ndarray:
  return _by_group(np.arange(len(table)), fractions, rng)


def _cold_user(table: pairs_lib.Pairs, fractions, rng) -> np.ndarray:
  return _by_group(table.user_id, fractions, rng)


def _cold_track(table: pairs_lib.Pairs, fractions, rng) -> np.ndarray:
  return _by_group(table.song_id, fractions, rng)


STRATEGIES = {"random": _random, "cold_user": _cold_user,
              "cold_track": _cold_track}


def split(table: pairs_lib.Pairs, strategy: str = "random", seed: int = 0,
          fractions=DEFAULT_FRACTIONS) -> dict[str, pairs_lib.Pairs]:
  """Splits the pairs into train, validation and test.

  Args:
    table: the pairs, each exactly once in the result.
    strategy: one of STRATEGIES.
    seed: the same seed (and table) gives the same splits.
    fractions: of the pairs, (train, validation, test).

  Returns:
    {"train": Pairs, "validation": Pairs, "test": Pairs}.

  Raises:
    ConfigError: an unknown strategy or invalid fractions.
  """
  if strategy not in STRATEGIES:
    raise errors.ConfigError(
        f"split_strategy must be one of {', '.join(STRATEGIES)}, got"
        f" {strategy!r}")
  fractions = check_fractions(fractions)
  rng = np.random.default_rng(seed)
  split_of_row = STRATEGIES[strategy](table, fractions, rng)
  return {name: table.take(split_of_row == index)
          for index, name in enumerate(SPLITS)}


def _distinct(values: np.ndarray) -> np.ndarray:
  """np.unique by sorting: numpy 2's default hashing is much slower here."""
  values = np.sort(values)
  return values[np.r_[True, values[1:] != values[:-1]]] if len(values) else (
      values)


def describe(splits: dict[str, pairs_lib.Pairs]) -> dict:
  """Sizes of each split and what they share.

  Returns:
    {split: {"pairs", "tracks", "users"}} and "overlap": {"users"|"tracks":
    {"train&validation", "train&test", "validation&test": count shared}}.
  """
  distinct = {(name, field): _distinct(getattr(table, field))
              for name, table in splits.items()
              for field in ("song_id", "user_id")}
  summary = {name: {"pairs": len(table),
                    "tracks": len(distinct[(name, "song_id")]),
                    "users": len(distinct[(name, "user_id")])}
             for name, table in splits.items()}
  overlap = {}
  for kind, field in (("users", "user_id"), ("tracks", "song_id")):
    overlap[kind] = {}
    for index, first in enumerate(SPLITS):
      for second in SPLITS[index + 1:]:
        shared = np.intersect1d(distinct[(first, field)],
                                distinct[(second, field)], assume_unique=True)
        overlap[kind][f"{first}&{second}"] = len(shared)
  summary["overlap"] = overlap
  return summary


# What each cold strategy keeps out of train: (pair column, what it counts).
_COLD = {"cold_user": ("user_id", "users"), "cold_track": ("song_id", "tracks")}


def guarantee(splits: dict[str, pairs_lib.Pairs], strategy: str) -> str:
  """What a cold split guarantees, counted on the split itself, e.g.
  "cold_user split: 0 of 3,010 test users are in train; 0 of 862
  validation users are in train"; "" for any other strategy.

  Args:
    splits: {"train", "validation", "test"} -> pairs.
    strategy: the strategy that made them.
  """
  if strategy not in _COLD:
    return ""
  column, noun = _COLD[strategy]
  train = _distinct(getattr(splits["train"], column))
  parts = []
  for name in ("test", "validation"):
    ids = _distinct(getattr(splits[name], column))
    shared = np.intersect1d(train, ids, assume_unique=True)
    parts.append(f"{len(shared):,} of {len(ids):,} {name} {noun} are in"
                 " train")
  return f"{strategy} split: " + "; ".join(parts)
