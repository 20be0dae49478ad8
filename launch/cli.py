"""How every launcher starts and ends: `cli.run(main)` instead of `app.run`.

A user's mistake (a bad flag, file, table row or setting, a missing workdir
file, a full disk) ends with one line on stderr, `error: <message>`, whose
message names the file, row or setting, and exit status 1 (2 for a bad
command line). Any other exception is a bug and keeps its traceback.
`--debug` shows the traceback of user errors too.

Every launcher also takes `--coordinator_address`, `--num_processes` and
`--process_id`, to run on several processes (hosts) as one job
(ctxtag.distributed); the job starts before `main` runs.
"""

import errno
import sys

from absl import app
from absl import flags

from ctxtag import distributed
from ctxtag import errors

_DEBUG = flags.DEFINE_bool(
    "debug", False, "Show the Python traceback of user errors too.")
_COORDINATOR_ADDRESS = flags.DEFINE_string(
    "coordinator_address", None,
    "host:port where process 0 serves the coordination of a run on several"
    " processes (hosts); the same on every host.")
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", 1, "Processes in the run, one per host; all run the"
    " same command but for --process_id.", lower_bound=1)
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", 0, "This process's index in [0, --num_processes);"
    " process 0 builds the dataset and writes the run's files.",
    lower_bound=0)

# Errors of the machine rather than of ctxtag: a full disk, a read-only one.
_MACHINE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)
_FILE_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError,
                NotADirectoryError)
USAGE_EXIT = 2
ERROR_EXIT = 1


def is_user_error(error: BaseException) -> bool:
  """Whether `error` is the user's to fix rather than a bug."""
  return (isinstance(error, (errors.UserError, app.UsageError, _FILE_ERRORS))
          or (isinstance(error, OSError) and error.errno in _MACHINE_ERRNOS))


def message(error: BaseException) -> str:
  """`error` as one line that names its file when Python knows it."""
  if isinstance(error, OSError) and error.strerror:
    text = (f"{error.filename}: {error.strerror}" if error.filename
            else error.strerror)
  else:
    text = str(error) or type(error).__name__
  return " ".join(text.split())


def _fail(text: str, status: int):
  print(f"error: {text}", file=sys.stderr)
  sys.exit(status)


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with a bad flag reported in one line."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as error:
    _fail(f"{message(error)} (see --helpshort)", USAGE_EXIT)


def _debug_requested() -> bool:
  if flags.FLAGS.is_parsed():
    return _DEBUG.value
  return "--debug" in sys.argv


def _guarded(main):
  def guarded_main(argv):
    try:
      distributed.initialize(_COORDINATOR_ADDRESS.value, _NUM_PROCESSES.value,
                             _PROCESS_ID.value)
      return main(argv)
    except Exception as error:  # pylint: disable=broad-except
      if not is_user_error(error) or _debug_requested():
        raise
      status = USAGE_EXIT if isinstance(error, app.UsageError) else ERROR_EXIT
      _fail(message(error), status)
  return guarded_main


def run(main) -> None:
  """Runs `main(argv)` as absl's app.run does, with one-line user errors."""
  app.run(_guarded(main), flags_parser=_parse_flags)
