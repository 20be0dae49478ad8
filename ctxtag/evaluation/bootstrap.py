"""Bootstrap intervals over users, and paired comparisons of two models.

The unit of resampling is the user, not the pair: a user's pairs share the
user's taste and are not independent, so resampling pairs would give
intervals that are too narrow. Resample b draws `num_users` users with
replacement: user floor(u x num_users) for each of the `num_users` uniform
doubles u that numpy's PCG64(seed) gives after its first b x num_users
outputs (`draws`). One stream serves every resample in order, any one
resample can be reproduced alone, and the result does not depend on how the
work is chunked. A user drawn k times counts k times:
as k users in a mean over users, with k copies of its pairs in pooled counts.

Every statistic here is a function of per-user sums (ctxtag.evaluation.
users), so a chunk of resamples is one (resamples x users) count matrix times
one (users x statistics) matrix. Intervals are percentile intervals
(`np.quantile`'s default linear interpolation) of the resampled values.
"""

import dataclasses

import numpy as np

# Bounds the count matrix of one chunk of resamples to 32 MB (float64).
_CHUNK_ENTRIES = 4_000_000


@dataclasses.dataclass(frozen=True)
class Settings:
  """How intervals are made.

  Attributes:
    resamples: bootstrap resamples of the users (0 turns intervals off).
    seed: seed of the resamples.
    confidence: coverage of the intervals.
  """
  resamples: int = 1000
  seed: int = 0
  confidence: float = 0.95

  def describe(self) -> dict:
    return {"unit": "user", "resamples": self.resamples, "seed": self.seed,
            "confidence": self.confidence}


def _generator(seed: int, first_resample: int, num_users: int):
  """The generator positioned at resample `first_resample`'s first draw."""
  bit_generator = np.random.PCG64(seed)
  bit_generator.advance(first_resample * num_users)
  return np.random.Generator(bit_generator)


def _users_of(uniform, num_users: int) -> np.ndarray:
  # floor(u * n) < n for u < 1 (the guard only documents it).
  return np.minimum((uniform * num_users).astype(np.int64), num_users - 1)


def draws(num_users: int, resample: int, seed: int) -> np.ndarray:
  """The users (indices) drawn by resample `resample` (module docstring)."""
  return _users_of(_generator(seed, resample, num_users).random(num_users),
                   num_users)


def counts(num_users: int, resamples: range, seed: int) -> np.ndarray:
  """(len(resamples), num_users): how often each resample draws each user."""
  drawn = _users_of(_generator(seed, resamples.start, num_users).random(
      (len(resamples), num_users)), num_users)
  drawn += num_users * np.arange(len(resamples))[:, None]
  return np.bincount(drawn.ravel(), minlength=len(resamples) * num_users
                     ).reshape(len(resamples), num_users).astype(np.float64)


def resampled_sums(per_user_UxK: np.ndarray, settings: Settings) -> np.ndarray:
  """Each resample's count-weighted sum over users of every column.

  Args:
    per_user_UxK: per-user statistics, one column each.
    settings: the resamples to draw.

  Returns:
    (settings.resamples, K).
  """
  num_users = per_user_UxK.shape[0]
  chunk = max(1, _CHUNK_ENTRIES // max(num_users, 1))
  sums = [counts(num_users, range(start, min(start + chunk,
                                             settings.resamples)),
                 settings.seed) @ per_user_UxK
          for start in range(0, settings.resamples, chunk)]
  if not sums:
    return np.zeros((0, per_user_UxK.shape[1]))
  return np.concatenate(sums)


def interval(values_B: np.ndarray, confidence: float) -> list[float]:
  """Percentile interval of resampled values; NaNs (resamples where the
  statistic is undefined) are left out, and [NaN, NaN] if all are NaN."""
  values = np.asarray(values_B, np.float64)
  values = values[~np.isnan(values)]
  if not values.size:
    return [float("nan"), float("nan")]
  tail = (1 - confidence) / 2
  low, high = np.quantile(values, [tail, 1 - tail])
  return [float(low), float(high)]


def intervals(values_BxK: np.ndarray, confidence: float) -> np.ndarray:
  """`interval` of every column at once: (K, 2). Columns with NaNs go
  through `interval`, the rest through one vectorised quantile."""
  values = np.asarray(values_BxK, np.float64)
  tail = (1 - confidence) / 2
  if not values.shape[0]:
    return np.full((values.shape[1], 2), np.nan)
  result = np.quantile(values, [tail, 1 - tail], axis=0).T
  for column in np.flatnonzero(np.isnan(values).any(axis=0)):
    result[column] = interval(values[:, column], confidence)
  return result


def wilcoxon_p(differences_UxK: np.ndarray) -> float | np.ndarray:
  """Two-sided Wilcoxon signed-rank p-values of paired per-user differences.

  Users whose difference is 0 are left out (scipy's default "wilcox"). If
  every difference is 0 the two models agree on every user: there is no
  evidence of a difference, and the p-value is 1.

  Args:
    differences_UxK: per-user differences (U,), or K columns of them.

  Returns:
    A float for (U,), else (K,) p-values.
  """
  # Per-user values computed two ways agree only to ~1e-16; rounding keeps
  # float noise from breaking ties of |difference| or making a 0 non-zero.
  differences = np.round(np.asarray(differences_UxK, np.float64), 12)
  columns = differences.reshape(len(differences), -1)
  informative = (columns != 0).any(axis=0)
  p_values = np.ones(columns.shape[1])
  if informative.any():
    # scipy.stats takes half a second to import: evaluations that compare
    # models pay for it, not every launcher that imports this module.
    import scipy.stats  # pylint: disable=g-import-not-at-top
    p_values[informative] = scipy.stats.wilcoxon(columns[:, informative],
                                                 axis=0).pvalue
  return float(p_values[0]) if differences.ndim == 1 else p_values


# Two levels: training seeds, then users.
#
# Runs that differ only in their training seed are a second source of
# variation. A two-level resample draws `num_seeds` seeds with replacement
# (seed floor(u x num_seeds) for each uniform double u of the stream
# PCG64([seed, SEED_STREAM]) after its first b x num_seeds outputs), then
# users: with one draw shared by every seed when the seeds share their test
# users (the stream of `draws`, so that one seed reduces to the one-level
# bootstrap), or independently within each seed when each has its own test
# users (seed number s, counting from 0, uses the stream of `draws` seeded
# with `seed + s`). Its statistic is the mean, over the drawn seeds, of each
# seed's mean over its drawn users.
SEED_STREAM = 0x5EED5  # keeps the seed draws apart from the user draws


def seed_draws(num_seeds: int, resamples: range, seed: int) -> np.ndarray:
  """(len(resamples), num_seeds): the seeds (indices) each two-level
  resample draws (above)."""
  bit_generator = np.random.PCG64([seed, SEED_STREAM])
  bit_generator.advance(resamples.start * num_seeds)
  uniform = np.random.Generator(bit_generator).random(
      (len(resamples), num_seeds))
  return _users_of(uniform, num_seeds)


def two_level_resampled_means(per_seed_UxK, settings: Settings,
                              shared_users: bool) -> np.ndarray:
  """Each two-level resample's mean over seeds of the means over users.

  Args:
    per_seed_UxK: one (users, K) matrix of per-user statistics per seed;
      with `shared_users`, their rows are the same users in the same order.
    settings: the resamples, their seed.
    shared_users: whether one user draw serves every seed (above).

  Returns:
    (settings.resamples, K).

  Raises:
    ValueError: for no seeds, or seeds of unequal user counts with
      `shared_users`.
  """
  values = [np.asarray(v, np.float64).reshape(len(v), -1)
            for v in per_seed_UxK]
  if not values:
    raise ValueError("no seeds to resample")
  num_seeds, num_columns = len(values), values[0].shape[1]
  if shared_users:
    if len({v.shape[0] for v in values}) != 1:
      raise ValueError("shared test users need the same users in every seed,"
                       f" got {[v.shape[0] for v in values]} users")
    means_BxSxK = (resampled_sums(np.concatenate(values, axis=1), settings)
                   / values[0].shape[0]).reshape(-1, num_seeds, num_columns)
  else:
    means_BxSxK = np.stack([
        resampled_sums(v, dataclasses.replace(settings,
                                              seed=settings.seed + s))
        / v.shape[0] for s, v in enumerate(values)], axis=1)
  drawn = seed_draws(num_seeds, range(settings.resamples), settings.seed)
  drawn += num_seeds * np.arange(settings.resamples)[:, None]
  weights_BxS = np.bincount(
      drawn.ravel(), minlength=settings.resamples * num_seeds).reshape(
          settings.resamples, num_seeds) / num_seeds
  return np.einsum("bs,bsk->bk", weights_BxS, means_BxSxK)


def two_level(per_seed_UxK, settings: Settings, shared_users: bool):
  """Means over seeds of per-user means, with two-level intervals.

  Args:
    per_seed_UxK, settings, shared_users: as for
      `two_level_resampled_means`.

  Returns:
    (mean (K,): the mean over seeds of each seed's mean over users, exact;
     intervals (K, 2): percentile intervals of the two-level resamples;
     per_seed (seeds, K): each seed's mean over users).
  """
  per_seed = np.stack([np.asarray(v, np.float64).reshape(len(v), -1).mean(
      axis=0) for v in per_seed_UxK])
  resampled = two_level_resampled_means(per_seed_UxK, settings, shared_users)
  return per_seed.mean(axis=0), intervals(resampled, settings.confidence), (
      per_seed)
