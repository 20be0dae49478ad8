"""The users of a set of pairs, and per-user sums without a loop over users.

Every statistic that averages over users (satisfaction, ranking) or pools
pairs (the SG protocols) is a function of per-user sums. Computing those sums
once, as a (users x k) matrix, is what makes the bootstrap over users cheap:
a resample is a vector of user counts, and its statistics follow from one
matrix product (ctxtag.evaluation.bootstrap).
"""

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Users:
  """The distinct users of P pairs, in sorted id order.

  Attributes:
    ids_U: the distinct user ids, sorted.
    index_P: each pair's user, as an index into `ids_U`.
    order_P: the pairs sorted by user, for segment sums; None if the pairs
      are already in user order (see `in_user_order`).
    starts_U: where each user's pairs start in `order_P`.
    pairs_U: how many pairs each user has.
  """
  ids_U: np.ndarray
  index_P: np.ndarray
  order_P: np.ndarray | None
  starts_U: np.ndarray
  pairs_U: np.ndarray

  @classmethod
  def from_ids(cls, user_ids_P) -> "Users":
    ids, index = np.unique(np.asarray(user_ids_P), return_inverse=True)
    index = index.ravel()
    pairs = np.bincount(index, minlength=len(ids))
    starts = np.concatenate([[0], np.cumsum(pairs)[:-1]])
    return cls(ids, index, np.argsort(index, kind="stable"), starts, pairs)

  def in_user_order(self) -> "Users":
    """The same users for the pairs permuted by `order_P`: per-user sums of
    pairs in that order need no gather (apply `order_P` to the pairs)."""
    return dataclasses.replace(self, index_P=self.index_P[self.order_P],
                               order_P=None)

  @property
  def count(self) -> int:
    return len(self.ids_U)

  def sum(self, values_PxK: np.ndarray) -> np.ndarray:
    """Per-user sums of per-pair values: (P,) -> (U,), (P, K) -> (U, K)."""
    values = np.asarray(values_PxK)
    if values.dtype == bool:
      values = values.astype(np.int64)
    if self.order_P is not None:
      values = values[self.order_P]
    return np.add.reduceat(values, self.starts_U, axis=0)

  def mean(self, values_PxK: np.ndarray) -> np.ndarray:
    """Per-user means of per-pair values."""
    sums = self.sum(values_PxK).astype(np.float64)
    return sums / self.pairs_U.reshape((-1,) + (1,) * (sums.ndim - 1))
