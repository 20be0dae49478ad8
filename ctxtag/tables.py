"""CSV tables in the public dataset's layout, read with checks.

  ground truth:              song_id,user_id,car,...,workout  (one-hot rows)
  audio-model predictions:   song_id,car,...,workout          (one row a track)
  user-model predictions:    song_id,user_id,car,...,workout  (one row a pair)

Every problem is reported with the file and the line it is on.
"""

import csv
import dataclasses
import os

import numpy as np

from ctxtag import labels


class TableError(ValueError):
  """A CSV that does not hold what its role requires."""


@dataclasses.dataclass(frozen=True)
class Table:
  """Rows of one CSV: ids and a (rows, 10) value block in label order."""
  path: str
  song_id: np.ndarray
  user_id: np.ndarray | None
  values_RxC: np.ndarray

  def keys(self) -> list:
    if self.user_id is None:
      return self.song_id.tolist()
    return list(zip(self.song_id.tolist(), self.user_id.tolist()))


def write(path: str, song_id, values_RxC, user_id=None, fmt="%.6f") -> None:
  """Writes a table; `user_id` None gives the per-track layout.

  The rows go to `<path>.partial`, renamed to `path` once complete, so a
  killed write never leaves a table that passes for a whole one.
  """
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  id_columns = ["song_id"] + ([] if user_id is None else ["user_id"])
  partial = path + ".partial"
  with open(partial, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(id_columns + list(labels.LABELS))
    ids = [np.asarray(song_id)] + ([] if user_id is None
                                   else [np.asarray(user_id)])
    for row, values in enumerate(np.asarray(values_RxC)):
      writer.writerow([int(column[row]) for column in ids]
                      + [fmt % v for v in values])
  os.replace(partial, path)


def write_groundtruth(path: str, song_id, user_id, label_P) -> None:
  one_hot = np.eye(labels.NUM_LABELS, dtype=int)[np.asarray(label_P)]
  write(path, song_id, one_hot, user_id, fmt="%d")


def read(path: str, with_user: bool) -> Table:
  """Reads a table, checking columns, ids and values.

  Args:
    path: the CSV file.
    with_user: whether the layout has a user_id column.

  Raises:
    TableError: naming the file and line of the first problem.
  """
  if not os.path.exists(path):
    raise TableError(f"{path}: no such file")
  id_columns = ["song_id"] + (["user_id"] if with_user else [])
  with open(path, newline="") as f:
    reader = csv.reader(f)
    header = next(reader, None)
    if header is None:
      raise TableError(f"{path}: the file is empty")
    header = [name.strip() for name in header]
    missing = [c for c in id_columns + list(labels.LABELS) if c not in header]
    if missing:
      raise TableError(f"{path}: missing columns {missing}; expected"
                       f" {','.join(id_columns + list(labels.LABELS))}")
    positions = [header.index(c) for c in id_columns + list(labels.LABELS)]
    ids, values = [], []
    for line, row in enumerate(reader, start=2):
      if len(row) != len(header):
        raise TableError(f"{path}, line {line}: {len(row)} fields, the"
                         f" header has {len(header)}")
      fields = [row[p].strip() for p in positions]
      try:
        ids.append([int(v) for v in fields[:len(id_columns)]])
      except ValueError:
        raise TableError(f"{path}, line {line}: ids must be integers, got"
                         f" {fields[:len(id_columns)]}") from None
      try:
        numbers = [float(v) for v in fields[len(id_columns):]]
      except ValueError:
        raise TableError(f"{path}, line {line}: values must be numbers, got"
                         f" {fields[len(id_columns):]}") from None
      if not all(np.isfinite(numbers)):
        raise TableError(f"{path}, line {line}: non-finite value in"
                         f" {fields[len(id_columns):]}")
      values.append(numbers)
  if not ids:
    raise TableError(f"{path}: no rows below the header")
  ids = np.asarray(ids, np.int64)
  table = Table(path, ids[:, 0], ids[:, 1] if with_user else None,
                np.asarray(values, np.float64))
  seen = {}
  for line, key in enumerate(table.keys(), start=2):
    if key in seen:
      raise TableError(f"{path}, line {line}: {key} repeats line {seen[key]}")
    seen[key] = line
  return table


def read_groundtruth(path: str) -> Table:
  """Reads a ground-truth table; every row must be one-hot."""
  table = read(path, with_user=True)
  values = table.values_RxC
  bad = np.flatnonzero(~np.isin(values, (0, 1)).all(axis=1)
                       | (values.sum(axis=1) != 1))
  if len(bad):
    raise TableError(f"{path}, line {bad[0] + 2}: a ground-truth row must"
                     " hold exactly one 1 among the contexts, got"
                     f" {values[bad[0]].tolist()}")
  return table


def align(table: Table, keys: list, what: str) -> np.ndarray:
  """The rows of `table` for `keys`, in that order.

  Raises:
    TableError: for a row whose id the ground truth lacks, or a key the
      table lacks.
  """
  index = {key: row for row, key in enumerate(table.keys())}
  wanted = set(keys)
  for row, key in enumerate(table.keys()):
    if key not in wanted:
      raise TableError(f"{table.path}, line {row + 2}: {what} id {key} is not"
                       " in the ground truth")
  missing = [key for key in keys if key not in index]
  if missing:
    raise TableError(f"{table.path}: no row for {len(missing)} {what} ids of"
                     f" the ground truth, e.g. {missing[0]}")
  return table.values_RxC[[index[key] for key in keys]]
