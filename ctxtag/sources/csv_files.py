"""Reading the CSV inputs of real-data sources, with errors that name them.

UTF-8 with or without a byte-order mark (Excel writes one); a byte that is
not UTF-8, a missing file or a missing column is an error naming the file
(and line), never a bare UnicodeDecodeError or KeyError.
"""

import contextlib
import csv
import os
import re
from collections.abc import Iterator

from ctxtag import errors

_INT64_MAX = 2**63 - 1


class CsvError(errors.UserError, ValueError):
  """A CSV input that cannot be read as the layout requires."""


_ASCII_DIGITS = re.compile(r"^[0-9]+$")


def parse_id(text: str, positive: bool = False) -> int:
  """An id: a whole number in ASCII digits within int64, spaces and tabs
  around it dropped; with `positive`, above 0 (song ids), else at least 0.

  Signs, exponents, underscores, decimals and other scripts' digits (which
  Python's int() would take: "١٢" is 12 to it) are not ids. The release's
  build and the preview fetcher read song ids by this one rule, so a row
  the fetcher skips is one the build counts as defective.

  Raises:
    ValueError: `text` is not such an id.
  """
  digits = text.strip(" \t")
  if not _ASCII_DIGITS.match(digits):
    raise ValueError(f"{text!r} is not an id (a whole number in ASCII"
                     " digits)")
  value = int(digits)
  if value > _INT64_MAX:
    raise ValueError(f"id {digits} is beyond the int64 range")
  if positive and value == 0:
    raise ValueError(f"{text!r} is not a song id (a positive integer)")
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
