"""user_embeddings.csv of the public release: one 256-d vector per user.

Layout: a `user_id` column, then one column (whatever its name) holding the
vector as a list literal, `"[0.12, -0.4, ...]"`. The literal is parsed as
numbers, never evaluated; commas and/or whitespace separate them. A row whose
vector is unparsable, of another size or not finite marks its user invalid.
A user listed again with the same vector keeps its first row, silently (the
data is the same); listed again with another vector (or one row valid and
another not), the user is conflicting: which vector is theirs is unknown,
so both rows are dropped (`user_embedding_conflicting`). Users are only
judged when a pair needs them: a defect of an unused user costs nothing.
"""

import dataclasses
import os
import re

import numpy as np

from ctxtag import labels
from ctxtag.sources import csv_files

FILE = "user_embeddings.csv"
_SEPARATORS = re.compile(r"[,\s]+")


@dataclasses.dataclass
class UserEmbeddings:
  """Parsed user embeddings with the defects of invalid rows.

  Attributes:
    path: the CSV read.
    row_of_user: user id -> row of `vectors_UxE`.
    vectors_UxE: float32 embeddings of the valid users.
    invalid: user id -> (line number, what is wrong), for invalid rows.
    conflicting: user id -> (line numbers of its first two disagreeing
      rows, what differs), for users listed with different vectors.
  """
  path: str
  row_of_user: dict[int, int]
  vectors_UxE: np.ndarray
  invalid: dict[int, tuple[int, str]]
  conflicting: dict[int, tuple[tuple[int, int], str]] = dataclasses.field(
      default_factory=dict)

  def lookup(self, user_id: int) -> np.ndarray:
    return self.vectors_UxE[self.row_of_user[user_id]]


def parse_vector(text: str, dim: int = labels.USER_EMBEDDING_DIM
                 ) -> np.ndarray:
  """A list literal "[a, b, ...]" -> float32[dim]; ValueError if it is not."""
  text = text.strip()
  if not (text.startswith("[") and text.endswith("]")):
    raise ValueError("the vector is not a list literal [x, y, ...]")
  items = [item for item in _SEPARATORS.split(text[1:-1].strip()) if item]
  try:
    vector = np.array([float(item) for item in items], np.float64)
  except ValueError:
    raise ValueError("the vector holds something that is not a number"
                     ) from None
  if vector.shape != (dim,):
    raise ValueError(f"the vector has {len(vector)} numbers, expected {dim}")
  if not np.all(np.isfinite(vector)):
    raise ValueError("the vector holds NaN or infinite numbers")
  if np.any(np.abs(vector) > np.finfo(np.float32).max):
    raise ValueError("the vector holds numbers beyond float32")
  return vector.astype(np.float32)


def read(path: os.PathLike | str,
         dim: int = labels.USER_EMBEDDING_DIM) -> UserEmbeddings:
  """Reads a user_embeddings.csv; a missing file or column is an error."""
  path = os.fspath(path)
  # user -> (first line, its vector or None, what is wrong with it)
  first: dict[int, tuple[int, np.ndarray | None, str]] = {}
  invalid, conflicting = {}, {}
  with csv_files.open_csv(path) as (reader, header):
    csv_files.require_columns(path, header, ["user_id"])
    if len(header) < 2:
      raise csv_files.CsvError(
          f"{path}: expected a user_id column and a column holding the"
          f" vectors, found {header}")
    user_column = header.index("user_id")
    vector_column = next(i for i in range(len(header)) if i != user_column)
    for line, row in reader:
      try:
        user_id = csv_files.parse_id(row[user_column])
      except (ValueError, IndexError):
        invalid.setdefault(-line, (line, "the user_id is not an integer id"))
        continue
      try:
        vector, what = parse_vector(row[vector_column], dim), ""
      except (ValueError, IndexError) as error:
        vector, what = None, (str(error) if isinstance(error, ValueError)
                              else "the row has no vector column")
      if user_id not in first:
        first[user_id] = (line, vector, what)
        continue
      if user_id in conflicting:
        continue
      first_line, first_vector, _ = first[user_id]
      if first_vector is None and vector is None:
        continue  # invalid either way: the first row says why
      if (first_vector is not None and vector is not None
          and np.array_equal(first_vector, vector)):
        continue  # the same vector again
      conflicting[user_id] = (
          (first_line, line),
          "listed twice with different vectors" if vector is not None
          and first_vector is not None else
          "listed twice, once with a valid vector and once without")
  row_of_user, vectors = {}, []
  for user_id, (line, vector, what) in first.items():
    if user_id in conflicting:
      continue
    if vector is None:
      invalid[user_id] = (line, what)
      continue
    row_of_user[user_id] = len(vectors)
    vectors.append(vector)
  return UserEmbeddings(
      path=path, row_of_user=row_of_user,
      vectors_UxE=(np.stack(vectors) if vectors
                   else np.zeros((0, dim), np.float32)),
      invalid=invalid, conflicting=conflicting)
