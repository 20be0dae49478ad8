"""Files written whole or not at all.

Every file ctxtag writes goes to a temporary name in the same directory and is
renamed over its target once complete, so a kill or a full disk never leaves
a half-written file that passes for a whole one, and never destroys the
previous version before the new one is complete.
"""

import contextlib
import errno
import json
import math
import os
import tempfile

from ctxtag import errors


def absolute(path: os.PathLike | str) -> str:
  """`path` with `~` expanded, made absolute (against the current
  directory) and normalised: what ctxtag stores, so a workdir's files mean
  the same from any directory."""
  return os.path.abspath(os.path.expanduser(os.fspath(path)))


class WriteError(errors.UserError, OSError):
  """A file that could not be written (full disk, no permission)."""


def _umask() -> int:
  # os.umask can only be read by setting it; set it straight back.
  mask = os.umask(0o022)
  os.umask(mask)
  return mask


# The process's umask when ctxtag was imported: what every file it writes
# is created under, as any other program's files are.
_UMASK = _umask()


def temporary_beside(path: os.PathLike | str) -> tuple[int, str]:
  """A new temporary file beside `path`, for a write renamed into place:
  (its descriptor, its name). It has the mode a file created at `path`
  would get (0644 under umask 022), not mkstemp's 0600, which would survive
  the rename and keep the result from colleagues and other hosts' users."""
  path = os.fspath(path)
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  handle, temporary = tempfile.mkstemp(
      dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
  os.fchmod(handle, 0o666 & ~_UMASK)
  return handle, temporary


@contextlib.contextmanager
def atomic_open(path: os.PathLike | str, mode: str = "w", **kwargs):
  """Opens a temporary file beside `path`; renames it to `path` on success.

  Args:
    path: the file to (re)place.
    mode: "w" or "wb".
    **kwargs: passed to `open` (e.g. newline="").

  Raises:
    WriteError: naming `path`, if writing fails; the previous `path` is kept.
  """
  path = os.fspath(path)
  try:
    handle, temporary = temporary_beside(path)
  except OSError as error:
    raise WriteError(f"{path}: cannot write ({error.strerror or error})"
                     ) from error
  try:
    with os.fdopen(handle, mode, **kwargs) as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.replace(temporary, path)
  except BaseException as error:
    with contextlib.suppress(OSError):
      os.remove(temporary)
    if isinstance(error, OSError):
      raise WriteError(f"{path}: cannot write ({error.strerror or error})"
                       ) from error
    raise


def write_text(path: os.PathLike | str, text: str) -> None:
  with atomic_open(path, "w") as f:
    f.write(text)


def strict_json(value):
  """`value` with every non-finite float replaced by None (JSON null)."""
  if isinstance(value, float):
    return value if math.isfinite(value) else None
  if isinstance(value, dict):
    return {key: strict_json(item) for key, item in value.items()}
  if isinstance(value, (list, tuple)):
    return [strict_json(item) for item in value]
  if hasattr(value, "item") and hasattr(value, "dtype"):  # numpy scalars
    return strict_json(value.item())
  return value


def write_json(path: os.PathLike | str, value, indent: int | None = 2
               ) -> None:
  """Writes `value` as strict JSON (NaN and infinities become null);
  `indent=None` writes it on one line (large records)."""
  write_text(path, json.dumps(strict_json(value), indent=indent,
                              allow_nan=False) + "\n")


def is_disk_full(error: BaseException | None) -> bool:
  """Whether `error` or an error behind it is a full disk (tensorstore
  reports one as text)."""
  seen = set()
  while error is not None and id(error) not in seen:
    if (isinstance(error, OSError) and error.errno == errno.ENOSPC
        or "No space left on device" in str(error)):
      return True
    seen.add(id(error))
    error = error.__cause__ or error.__context__
  return False


class ClosedOnExit:
  """Makes a class with `close()` a context manager that closes it on exit;
  a failing close never hides the error in flight, which says more."""

  def __enter__(self):
    return self

  def __exit__(self, error_type, error, traceback) -> None:
    if error is None:
      self.close()
      return
    with contextlib.suppress(Exception):
      self.close()
