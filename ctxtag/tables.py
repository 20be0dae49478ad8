"""CSV tables in the public dataset's layout, read with checks.

  ground truth:              song_id,user_id,car,...,workout  (one-hot rows)
  audio-model predictions:   song_id,car,...,workout          (one row a track)
  user-model predictions:    song_id,user_id,car,...,workout  (one row a pair)

Every problem is reported with the file and the line it is on. Files are read
as UTF-8 with an optional byte-order mark (Excel writes one). Scores must be
probabilities: an audio model's sigmoid outputs lie in [0, 1]; a user model's
softmax row also sums to 1, within `ROW_SUM_TOLERANCE`.
"""

import csv
import dataclasses
import functools
import io
import os

import numpy as np

from ctxtag import errors
from ctxtag import files
from ctxtag import labels

# A softmax written with 6 decimals sums to 1 within 10 * 5e-7; 1e-3 also
# admits float16 or 4-decimal exports, and still refuses a row that is not a
# distribution (a missing context, unnormalised scores).
ROW_SUM_TOLERANCE = 1e-3
_INT64 = np.iinfo(np.int64)
_BOM = "\ufeff".encode()


class TableError(errors.UserError, ValueError):
  """A CSV that does not hold what its role requires."""


@dataclasses.dataclass(frozen=True)
class Table:
  """Rows of one CSV: ids and a (rows, 10) value block in label order.

  `line_R` is each row's line in the file, for messages.
  """
  path: str
  song_id: np.ndarray
  user_id: np.ndarray | None
  values_RxC: np.ndarray
  line_R: np.ndarray | None = None

  def keys(self) -> list:
    if self.user_id is None:
      return self.song_id.tolist()
    return list(zip(self.song_id.tolist(), self.user_id.tolist()))

  def line(self, row: int) -> int:
    return int(self.line_R[row]) if self.line_R is not None else row + 2


def write(path: str, song_id, values_RxC, user_id=None, fmt="%.6f") -> None:
  """Writes a table; `user_id` None gives the per-track layout.

  The rows go to a temporary file renamed to `path` once complete, so a
  killed write never leaves a table that passes for a whole one.

  Raises:
    files.WriteError: naming `path` (full disk, no permission).
  """
  id_columns = ["song_id"] + ([] if user_id is None else ["user_id"])
  ids = [np.asarray(song_id)] + ([] if user_id is None
                                 else [np.asarray(user_id)])
  with files.atomic_open(path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(id_columns + list(labels.LABELS))
    for row, values in enumerate(np.asarray(values_RxC)):
      writer.writerow([int(column[row]) for column in ids]
                      + [fmt % v for v in values])


def write_groundtruth(path: str, song_id, user_id, label_P) -> None:
  one_hot = np.eye(labels.NUM_LABELS, dtype=int)[np.asarray(label_P)]
  write(path, song_id, one_hot, user_id, fmt="%d")


def _bytes(path: str) -> bytes:
  if not os.path.exists(path):
    raise TableError(f"{path}: no such file")
  if os.path.isdir(path):
    raise TableError(f"{path}: is a directory, expected a CSV file")
  with open(path, "rb") as f:
    return f.read()


def _text(path: str, data: bytes) -> str:
  """`data` decoded as UTF-8 (a leading byte-order mark dropped)."""
  try:
    return data.decode("utf-8-sig")
  except UnicodeDecodeError as error:
    line = data[:error.start].count(b"\n") + 1
    raise TableError(
        f"{path}, line {line}: byte {data[error.start:error.start + 1]!r} is"
        " not UTF-8; save the file as UTF-8 CSV") from None


def _ids(path: str, line: int, fields: list[str]) -> list[int]:
  try:
    ids = [int(v) for v in fields]
  except ValueError:
    raise TableError(f"{path}, line {line}: ids must be integers, got"
                     f" {fields}") from None
  for value in ids:
    if not _INT64.min <= value <= _INT64.max:
      raise TableError(f"{path}, line {line}: id {value} does not fit in 64"
                       " bits")
  return ids


def _numbers(path: str, line: int, fields: list[str]) -> list[float]:
  try:
    numbers = [float(v) for v in fields]
  except ValueError:
    raise TableError(f"{path}, line {line}: values must be numbers, got"
                     f" {fields}") from None
  if not all(np.isfinite(numbers)):
    raise TableError(f"{path}, line {line}: non-finite value in {fields}")
  return numbers


def _positions(path: str, header: list[str], id_columns: list[str]):
  header = [name.strip() for name in header]
  expected = id_columns + list(labels.LABELS)
  missing = [c for c in expected if c not in header]
  if missing:
    raise TableError(f"{path}: missing columns {missing}; expected"
                     f" {','.join(expected)}")
  return [header.index(c) for c in expected]


def _rows(path: str, reader):
  """(line, fields) of each non-blank row; csv's own errors name the line."""
  while True:
    try:
      row = next(reader)
    except StopIteration:
      return
    except csv.Error as error:
      raise TableError(f"{path}, line {reader.line_num}: {error}") from None
    if row:
      yield reader.line_num, row


def _fast(path: str, data: bytes, id_columns: list[str],
          value_type: type = np.float64) -> Table | None:
  """The table parsed by numpy's C reader, or None if the file is anything
  but plain: then `_checked` reads it row by row and names the problem.

  Plain means ASCII without quotes, the header on the first line with the
  expected columns and no others, no blank lines, and every field a number
  that int() (ids) or float() (values) reads the same way, finite, with no
  repeated key. Whatever passes here, `_checked` would accept with the same
  values; 51,120 rows take 0.1 s here and about 1 s there. Parsing values as
  integers (`value_type` np.int64, for one-hot ground truth) is six times
  faster than as floats, and gives the same numbers where it succeeds.
  """
  if not data.isascii() or b'"' in data:
    return None
  header, _, body = data.partition(b"\n")
  names = [name.strip() for name in header.decode().rstrip("\r").split(",")]
  expected = id_columns + list(labels.LABELS)
  if sorted(names) != sorted(expected) or not body.strip():
    return None
  parsed = _parse_plain(body, names, id_columns, value_type)
  if parsed is None:
    return None
  ids, values = parsed
  num_lines = body.count(b"\n") + (not body.endswith(b"\n"))
  if len(ids) != num_lines or not np.isfinite(values).all():
    return None  # blank lines (numbered differently) or a non-finite value
  table = Table(path, ids[:, 0], ids[:, 1] if len(id_columns) > 1 else None,
                values, np.arange(2, len(ids) + 2))
  return None if _has_repeats(table) else table


def _parse_plain(body: bytes, names: list[str], id_columns: list[str],
                 value_type: type):
  """(ids_RxI int64, values_RxC float64) in the expected column order, by
  numpy's C reader; None where it refuses a field."""
  id_positions = [names.index(name) for name in id_columns]
  value_positions = [names.index(label) for label in labels.LABELS]
  decimals = (_fixed_decimals(body, len(names))
              if value_type is np.float64 else None)
  read = functools.partial(np.loadtxt, delimiter=",", comments=None,
                           ndmin=2, dtype=np.int64)
  try:
    if decimals is not None:
      # "0.123456" read as the integer 123456 / 10**6: integers parse 1.5x
      # faster than floats, and below 2**53 the division is exact.
      scaled = read(io.BytesIO(body.replace(b".", b"")),
                    usecols=value_positions)
      if np.abs(scaled).max() < 2**53:
        return (read(io.BytesIO(body), usecols=id_positions),
                scaled / 10.0**decimals)
    rows = np.loadtxt(io.BytesIO(body), delimiter=",", comments=None,
                      ndmin=1, dtype=np.dtype([
                          (name, np.int64 if name in id_columns
                           else value_type) for name in names]))
  except ValueError:
    return None
  return (np.stack([rows[name] for name in id_columns], axis=1),
          np.stack([rows[label] for label in labels.LABELS],
                   axis=1).astype(np.float64))


def _fixed_decimals(body: bytes, num_fields: int) -> int | None:
  """d if every label field is written with exactly d decimals ("%.6f"
  writes 6), and no other field holds a "."; else None.

  Every line having num_fields - 1 commas and the labels' count of dots,
  each dot followed by d digits and a separator, puts exactly one dot in
  each of a line's label fields or, if an id holds one, makes the ids'
  integer parse fail.
  """
  num_lines = body.count(b"\n") + (not body.endswith(b"\n"))
  if (body.count(b",") != num_lines * (num_fields - 1)
      or body.count(b".") != num_lines * labels.NUM_LABELS):
    return None
  text = np.frombuffer(body + b"\n", np.uint8)
  dots = np.flatnonzero(text == ord("."))
  decimals = 0
  while chr(text[dots[0] + 1 + decimals]).isdigit() and decimals < 16:
    decimals += 1
  if not 1 <= decimals <= 15 or dots[-1] + decimals + 1 >= len(text):
    return None
  for offset in range(1, decimals + 1):  # uint8: below "0" wraps above 9
    if ((text[dots + offset] - ord("0")) > 9).any():
      return None
  end = text[dots + decimals + 1]
  if not ((end == ord(",")) | (end == ord("\n")) | (end == ord("\r"))).all():
    return None
  return decimals


def _has_repeats(table: Table) -> bool:
  if table.user_id is None:
    ordered = np.sort(table.song_id)
    return bool((ordered[1:] == ordered[:-1]).any())
  order = np.lexsort((table.user_id, table.song_id))
  song, user = table.song_id[order], table.user_id[order]
  return bool(((song[1:] == song[:-1]) & (user[1:] == user[:-1])).any())


def _checked(path: str, text: str, id_columns: list[str]) -> Table:
  """The table read row by row, raising at the first problem."""
  reader = csv.reader(io.StringIO(text, newline=""))
  rows = _rows(path, reader)
  _, header = next(rows, (None, None))
  if header is None:
    raise TableError(f"{path}: the file is empty")
  positions = _positions(path, header, id_columns)
  ids, values, lines = [], [], []
  for line, row in rows:
    if len(row) != len(header):
      raise TableError(f"{path}, line {line}: {len(row)} fields, the"
                       f" header has {len(header)}")
    fields = [row[p].strip() for p in positions]
    ids.append(_ids(path, line, fields[:len(id_columns)]))
    values.append(_numbers(path, line, fields[len(id_columns):]))
    lines.append(line)
  if not ids:
    raise TableError(f"{path}: no rows below the header")
  ids = np.asarray(ids, np.int64)
  table = Table(path, ids[:, 0], ids[:, 1] if len(id_columns) > 1 else None,
                np.asarray(values, np.float64), np.asarray(lines))
  seen = {}
  for row, key in enumerate(table.keys()):
    if key in seen:
      raise TableError(f"{path}, line {table.line(row)}: {key} repeats line"
                       f" {seen[key]}")
    seen[key] = table.line(row)
  return table


def read(path: str, with_user: bool, integer_values: bool = False) -> Table:
  """Reads a table, checking columns, ids and values.

  Blank lines are skipped; line numbers in messages are the file's own.

  Args:
    path: the CSV file.
    with_user: whether the layout has a user_id column.
    integer_values: whether the values are expected to be integers (a
      faster parse is tried first; other numbers are still read).

  Raises:
    TableError: naming the file and line of the first problem.
  """
  id_columns = ["song_id"] + (["user_id"] if with_user else [])
  data = _bytes(path)
  if data.startswith(_BOM):
    data = data[len(_BOM):]
  return ((integer_values and _fast(path, data, id_columns, np.int64))
          or _fast(path, data, id_columns)
          or _checked(path, _text(path, data), id_columns))


def read_groundtruth(path: str) -> Table:
  """Reads a ground-truth table; every row must be one-hot."""
  table = read(path, with_user=True, integer_values=True)
  values = table.values_RxC
  bad = np.flatnonzero(~np.isin(values, (0, 1)).all(axis=1)
                       | (values.sum(axis=1) != 1))
  if len(bad):
    raise TableError(f"{path}, line {table.line(bad[0])}: a ground-truth row"
                     " must hold exactly one 1 among the contexts, got"
                     f" {values[bad[0]].tolist()}")
  return table


def _check_probabilities(table: Table, what: str) -> None:
  outside = np.flatnonzero(((table.values_RxC < 0)
                            | (table.values_RxC > 1)).any(axis=1))
  if len(outside):
    row = outside[0]
    values = table.values_RxC[row]
    column = int(np.flatnonzero((values < 0) | (values > 1))[0])
    raise TableError(
        f"{table.path}, line {table.line(row)}: {what} scores must lie in"
        f" [0, 1], got {labels.LABELS[column]}={values[column]:g}; give"
        " probabilities, not percentages, logits or negated scores")


def read_audio_predictions(path: str) -> Table:
  """Reads an audio model's per-track sigmoid scores, each in [0, 1]."""
  table = read(path, with_user=False)
  _check_probabilities(table, "audio-model")
  return table


def read_pair_predictions(path: str) -> Table:
  """Reads a user model's per-pair softmax scores.

  Raises:
    TableError: for a value outside [0, 1] or a row that does not sum to 1
      within ROW_SUM_TOLERANCE, naming the file and line.
  """
  table = read(path, with_user=True)
  _check_probabilities(table, "user-model")
  sums = table.values_RxC.sum(axis=1)
  bad = np.flatnonzero(np.abs(sums - 1) > ROW_SUM_TOLERANCE)
  if len(bad):
    raise TableError(
        f"{path}, line {table.line(bad[0])}: a user-model row must be a"
        f" distribution over the contexts summing to 1 (within"
        f" {ROW_SUM_TOLERANCE:g}), got a sum of {sums[bad[0]]:.6g}")
  return table


def align(table: Table, keys, what: str) -> np.ndarray:
  """The rows of `table` for `keys`, in that order.

  Args:
    table: a table read by `read`.
    keys: song ids, or (song id, user id) pairs: a list, or for speed a
      tuple of arrays (song_id_K,) or (song_id_K, user_id_K).
    what: what a key is, for messages ("song", "(song, user)").

  Raises:
    TableError: for a row whose id the ground truth lacks, or a key the
      table lacks.
  """
  wanted = _key_columns(keys, table.user_id is not None)
  own = [table.song_id] + ([] if table.user_id is None else [table.user_id])
  if all(np.array_equal(a, b) for a, b in zip(own, wanted)):
    return table.values_RxC  # written in the ground truth's order
  own_code, wanted_code = _codes(own, wanted)
  order = np.argsort(own_code, kind="stable")
  found = np.minimum(np.searchsorted(own_code, wanted_code, sorter=order),
                     len(order) - 1)
  rows = order[found]
  missing = own_code[rows] != wanted_code
  extra = ~np.isin(own_code, wanted_code)
  if extra.any():
    row = int(np.argmax(extra))
    raise TableError(f"{table.path}, line {table.line(row)}: {what} id"
                     f" {table.keys()[row]} is not in the ground truth")
  if missing.any():
    example = _key(wanted, int(np.argmax(missing)))
    raise TableError(f"{table.path}: no row for {int(missing.sum())} {what}"
                     f" ids of the ground truth, e.g. {example}")
  return table.values_RxC[rows]


def _key_columns(keys, with_user: bool) -> list[np.ndarray]:
  if isinstance(keys, tuple):
    return [np.asarray(column, np.int64) for column in keys]
  if with_user:
    pairs = np.asarray(keys, np.int64).reshape(-1, 2)
    return [pairs[:, 0], pairs[:, 1]]
  return [np.asarray(keys, np.int64)]


def _key(columns: list[np.ndarray], index: int):
  values = tuple(int(column[index]) for column in columns)
  return values if len(values) > 1 else values[0]


def _codes(own: list[np.ndarray], wanted: list[np.ndarray]):
  """One int64 code per key, equal iff the keys are equal."""
  if len(own) == 1:
    return own[0], wanted[0]
  codes = []
  for own_column, wanted_column in zip(own, wanted):
    _, inverse = np.unique(np.concatenate([own_column, wanted_column]),
                           return_inverse=True)
    codes.append(inverse.ravel())
  combined = codes[0] * (codes[1].max() + 1) + codes[1]
  return combined[:len(own[0])], combined[len(own[0]):]
