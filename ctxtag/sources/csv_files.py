"""Reading the CSV inputs of real-data sources, with errors that name them.

UTF-8 with or without a byte-order mark (Excel writes one); a byte that is
not UTF-8, a missing file or a missing column is an error naming the file
(and line), never a bare UnicodeDecodeError or KeyError.
"""

import contextlib
import csv
import os
from collections.abc import Iterator

from ctxtag import errors

_INT64_MAX = 2**63 - 1


class CsvError(errors.UserError, ValueError):
  """A CSV input that cannot be read as the layout requires."""


def parse_id(text: str) -> int:
  """An integer id within int64; ValueError otherwise."""
  value = int(text.strip())
  if not -_INT64_MAX - 1 <= value <= _INT64_MAX:
    raise ValueError(f"id {text.strip()} is beyond the int64 range")
  return value


def _numbered_rows(path: str, reader) -> Iterator[tuple[int, list[str]]]:
  line = 1
  try:
    for row in reader:
      line = reader.line_num
      if row:
        yield line, row
  except UnicodeDecodeError as error:
    raise CsvError(f"{path}: line {line + 1}: a byte that is not UTF-8"
                   f" ({error.reason}); save the file as UTF-8") from None
  except csv.Error as error:
    raise CsvError(f"{path}: line {line + 1}: not a valid CSV row ({error})"
                   ) from None


@contextlib.contextmanager
def open_csv(path: os.PathLike | str):
  """Opens a CSV; yields (iterator of (line number, row), header).

  Raises:
    CsvError: the file is missing, empty or not UTF-8.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise CsvError(f"{path}: no such file")
  with open(path, newline="", encoding="utf-8-sig") as f:
    reader = csv.reader(f)
    rows = _numbered_rows(path, reader)
    first = next(rows, None)
    if first is None:
      raise CsvError(f"{path}: the file is empty; expected a header row")
    yield rows, [name.strip() for name in first[1]]


def require_columns(path: str, header: list[str],
                    columns: list[str]) -> list[int]:
  """Indices of `columns` in `header`; CsvError naming the missing ones."""
  missing = [c for c in columns if c not in header]
  if missing:
    raise CsvError(f"{path}: missing column(s) {', '.join(missing)}; the"
                   f" header is {','.join(header)}")
  return [header.index(c) for c in columns]
