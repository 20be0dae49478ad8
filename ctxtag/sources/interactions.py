"""User embeddings from listening data: a truncated SVD of who played what.

The user x track matrix holds 1 where the user has the track in any playlist
(context or not), weighted per track by an inverse document frequency,
log(1 + users / users of the track), so that a shared rare track says more
about two users than a shared hit; each user's row is then scaled to unit
length, so that long histories do not outweigh short ones. Tracks of a
single user count in that length and are then left out: they relate no two
users, and in a long-tailed catalogue they are about half the columns (the
SVD's time and memory grow with the columns). A user's embedding is the
row projected on the matrix's top `dim` right singular vectors (latent
semantic analysis), computed with scikit-learn's randomized SVD (the
algorithm of its TruncatedSVD), deterministic given the seed.

Users with similar histories get embeddings with a high cosine. When the
matrix is smaller than the embedding (fewer users, or tracks shared by two
or more users, than `dim`), it has at most k = min(users, shared tracks)
singular vectors: the first k dimensions hold the projection, which then
keeps every inner product of the weighted rows exactly, and the remaining
`dim - k` dimensions are zero. A user none of whose tracks anyone else has
gets the zero vector: nothing in the data relates them to anyone.
"""

import dataclasses

import numpy as np
from scipy import sparse

from ctxtag import errors
from ctxtag import labels


@dataclasses.dataclass(frozen=True)
class Interactions:
  """(user, song) listening events as parallel int64 arrays; repeats allowed.

  Attributes:
    user_id: the user of each event.
    song_id: the song of each event.
  """
  user_id: np.ndarray
  song_id: np.ndarray

  def __post_init__(self):
    for field in ("user_id", "song_id"):
      object.__setattr__(self, field,
                         np.asarray(getattr(self, field), np.int64))
    if len(self.user_id) != len(self.song_id):
      raise ValueError("Interactions columns differ in length")

  def __len__(self) -> int:
    return len(self.user_id)


def weighted_matrix(interactions: Interactions
                    ) -> tuple[sparse.csr_matrix, np.ndarray]:
  """The weighted user x shared-track matrix and the user id of each row.

  Args:
    interactions: who played what; repeats count once.

  Returns:
    float32 CSR (users x tracks of two or more users), rows of unit length
    before the tracks of a single user were left out; int64 sorted user ids.
  """
  user_values, user_code = np.unique(interactions.user_id, return_inverse=True)
  song_values, song_code = np.unique(interactions.song_id, return_inverse=True)
  shape = (len(user_values), len(song_values))
  binary = sparse.csr_matrix(
      (np.ones(len(user_code), np.float32), (user_code, song_code)),
      shape=shape)
  binary.sum_duplicates()
  binary.data[:] = 1.0
  users_per_song = np.bincount(binary.indices, minlength=shape[1])
  idf = np.log1p(shape[0] / np.maximum(users_per_song, 1)).astype(np.float32)
  # scikit-learn takes most of a second to import: only runs that embed
  # listening data pay for it, not every launcher.
  from sklearn import preprocessing  # pylint: disable=g-import-not-at-top
  weighted = preprocessing.normalize(binary @ sparse.diags(idf, format="csr"))
  shared = weighted[:, users_per_song >= 2]
  return shared.astype(np.float32).tocsr(), user_values


def user_embeddings(interactions: Interactions, user_ids,
                    dim: int = labels.USER_EMBEDDING_DIM,
                    seed: int = 0) -> np.ndarray:
  """One embedding per user from the whole interaction matrix.

  Args:
    interactions: every (user, song) of every playlist.
    user_ids: the users to embed, in the order of the result; each must
      have interactions.
    dim: width of the embedding.
    seed: of the randomized SVD; the same seed gives the same embeddings.

  Returns:
    float32[len(user_ids), dim]; dimensions past min(users, shared tracks)
    are 0 (see the module docstring).

  Raises:
    ConfigError: `dim` below 1.
    ValueError: a user without interactions.
  """
  if dim < 1:
    raise errors.ConfigError(f"user embedding dim must be >= 1, got {dim}")
  user_ids = np.asarray(user_ids, np.int64)
  embeddings_UxD = np.zeros((len(user_ids), dim), np.float32)
  if not len(user_ids):
    return embeddings_UxD
  matrix, user_values = weighted_matrix(interactions)
  rows = np.minimum(np.searchsorted(user_values, user_ids),
                    max(len(user_values) - 1, 0))
  known = (user_values[rows] == user_ids if len(user_values)
           else np.zeros(len(user_ids), bool))
  if not np.all(known):
    raise ValueError(f"user {user_ids[np.argmin(known)]} has no interactions"
                     " to embed")
  rank = min(dim, *matrix.shape)
  if rank:
    from sklearn.utils import extmath  # pylint: disable=g-import-not-at-top
    _, _, vt_KxT = extmath.randomized_svd(matrix, rank, random_state=seed)
    embeddings_UxD[:, :rank] = matrix[rows] @ vt_KxT.T
  return embeddings_UxD
