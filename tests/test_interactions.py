"""Tests for ctxtag.sources.interactions: user embeddings from listening."""

import numpy as np
import pytest

from ctxtag import errors
from ctxtag import labels
from ctxtag.sources import interactions


def _weighted_by_hand(users_UxT: np.ndarray) -> np.ndarray:
  """The documented weighting, dense: idf log(1 + U / df), unit rows, then
  the tracks of a single user left out."""
  binary = (users_UxT > 0).astype(np.float64)
  users_T = binary.sum(axis=0)
  weighted = binary * np.log1p(binary.shape[0] / users_T)
  weighted /= np.linalg.norm(weighted, axis=1, keepdims=True)
  return weighted[:, users_T >= 2]


def _events(users_UxT: np.ndarray, user_ids, song_ids):
  rows, cols = np.nonzero(users_UxT)
  return interactions.Interactions(np.asarray(user_ids)[rows],
                                   np.asarray(song_ids)[cols])


def _cosine(a, b):
  return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _communities(seed=0, users=60, tracks_each=30, picks=8):
  """Three groups of users, each drawing from its own pool of tracks."""
  rng = np.random.default_rng(seed)
  matrix = np.zeros((users, 3 * tracks_each), np.int64)
  for user in range(users):
    pool = (user % 3) * tracks_each
    matrix[user, pool + rng.choice(tracks_each, picks, replace=False)] = 1
  return matrix


def test_small_data_keeps_inner_products_and_zero_pads():
  # 3 users, 2 shared tracks: rank 2, so 254 of the 256 dimensions are
  # unused. User 7's own third track only shortens the shared part.
  matrix = np.array([[1, 1, 1], [1, 0, 0], [0, 1, 0]])
  events = _events(matrix, [7, 8, 9], [100, 200, 300])
  embeddings = interactions.user_embeddings(events, [7, 8, 9], seed=0)
  assert embeddings.shape == (3, labels.USER_EMBEDDING_DIM)
  assert embeddings.dtype == np.float32
  np.testing.assert_array_equal(embeddings[:, 2:], 0.0)
  weighted = _weighted_by_hand(matrix)
  assert weighted.shape == (3, 2)
  np.testing.assert_allclose(embeddings @ embeddings.T, weighted @ weighted.T,
                             atol=1e-6)
  assert 0 < np.linalg.norm(embeddings[0]) < 1


def test_users_sharing_nothing_get_zero_vectors():
  events = interactions.Interactions([5, 6, 7, 7], [50, 60, 70, 70])
  np.testing.assert_array_equal(
      interactions.user_embeddings(events, [5, 6, 7], dim=4), 0.0)
  one = interactions.user_embeddings(
      interactions.Interactions([5, 6], [50, 50]), [5, 6], dim=4)
  np.testing.assert_allclose(np.abs(one), [[1, 0, 0, 0]] * 2, atol=1e-6)


def test_overlapping_histories_are_closer_full_rank():
  matrix = _communities()
  user_ids = np.arange(100, 160)
  events = _events(matrix, user_ids, np.arange(90))
  embeddings = interactions.user_embeddings(events, user_ids, seed=0)
  weighted = _weighted_by_hand(matrix)
  np.testing.assert_allclose(embeddings @ embeddings.T, weighted @ weighted.T,
                             atol=1e-5)
  shared = matrix @ matrix.T
  cosines = np.array([[_cosine(a, b) for b in embeddings]
                      for a in embeddings])
  off_diagonal = ~np.eye(len(matrix), dtype=bool)
  overlapping = cosines[(shared > 0) & off_diagonal]
  disjoint = cosines[(shared == 0) & off_diagonal]
  assert overlapping.min() > 0.05
  assert np.abs(disjoint).max() < 1e-5


def test_overlapping_histories_are_closer_truncated():
  # 3 dimensions for 3 communities: users of one group share tracks.
  matrix = _communities()
  user_ids = np.arange(60)
  events = _events(matrix, user_ids, np.arange(90))
  embeddings = interactions.user_embeddings(events, user_ids, dim=3, seed=0)
  cosines = np.array([[_cosine(a, b) for b in embeddings]
                      for a in embeddings])
  same_group = (user_ids[:, None] % 3) == (user_ids[None, :] % 3)
  off_diagonal = ~np.eye(60, dtype=bool)
  assert cosines[same_group & off_diagonal].mean() > 0.9
  assert np.abs(cosines[~same_group]).mean() < 0.1


def test_deterministic_given_seed_and_ordered_by_user_ids():
  matrix = _communities(seed=1)
  events = _events(matrix, np.arange(60), np.arange(90))
  first = interactions.user_embeddings(events, np.arange(60), dim=8, seed=3)
  second = interactions.user_embeddings(events, np.arange(60), dim=8, seed=3)
  np.testing.assert_array_equal(first, second)
  reordered = interactions.user_embeddings(events, [5, 2], dim=8, seed=3)
  np.testing.assert_array_equal(reordered, first[[5, 2]])


def test_repeated_events_count_once():
  matrix = _communities(seed=2)
  events = _events(matrix, np.arange(60), np.arange(90))
  doubled = interactions.Interactions(
      np.concatenate([events.user_id, events.user_id[::-1]]),
      np.concatenate([events.song_id, events.song_id[::-1]]))
  np.testing.assert_allclose(
      interactions.user_embeddings(doubled, np.arange(60), dim=8),
      interactions.user_embeddings(events, np.arange(60), dim=8), atol=1e-6)


def test_unknown_user_and_bad_dim_are_errors():
  events = interactions.Interactions([1, 2], [10, 10])
  with pytest.raises(ValueError, match="user 3 has no interactions"):
    interactions.user_embeddings(events, [1, 3])
  with pytest.raises(errors.ConfigError, match="dim must be >= 1"):
    interactions.user_embeddings(events, [1], dim=0)
  assert interactions.user_embeddings(events, [], dim=4).shape == (0, 4)
