"""How every launcher starts and ends: `cli.run(main)` instead of `app.run`.

A user's mistake (a bad flag, table row or setting, a missing workdir file,
a full disk) ends with one line on stderr, `error: <message>`, whose message
names the file, row or setting, and exit status 1 (2 for a bad command
line). Any other exception is a bug and keeps its traceback; `--debug`
shows the traceback of user errors too. Ctrl-C and SIGTERM end as
ctxtag.interrupts says: one line, exit status 130 or 143.

Every launcher also takes `--coordinator_address`, `--num_processes`,
`--process_id` and `--distributed_timeout`, to run on several processes
(hosts) as one job (ctxtag.distributed); the job starts, and the processes'
configs are compared, before `main` runs. A launcher's
`flags.adopt_module_key_flags(cli)` lists these and `--debug` in its
--helpshort.
"""

import errno
import functools
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections.config_flags import config_flags

from ctxtag import compilation_cache
from ctxtag import distributed
from ctxtag import errors
from ctxtag import interrupts

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
_DISTRIBUTED_TIMEOUT = flags.DEFINE_float(
    "distributed_timeout", distributed.DEFAULT_TIMEOUT_S,
    "Seconds a process of a run on several waits for the others to join"
    " before it gives up.", lower_bound=0.1)

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


def fail(text: str, status: int):
  """Ends the process with `error: text` on stderr and exit `status`."""
  print(f"error: {text}", file=sys.stderr)
  sys.exit(status)


def refuse_empty(name: str) -> None:
  """Refuses an empty value of the path flag `name` at parsing (an empty
  path would silently mean the current directory)."""
  flags.register_validator(
      name, lambda value: value is None or bool(value.strip()),
      message="expected a path, got an empty value")


def _parse_flags(argv: list[str]) -> list[str]:
  try:
    return flags.FLAGS(argv)
  except flags.Error as error:
    fail(f"{message(error)} (see --helpshort)", USAGE_EXIT)


def debug_requested() -> bool:
  """Whether --debug is given (read from the command line before flags
  are parsed)."""
  if flags.FLAGS.is_parsed():
    return _DEBUG.value
  return "--debug" in sys.argv


def _quiet_library_logs() -> None:
  """Keeps the terminal to progress and results: orbax and TFDS log each
  checkpoint write and file at INFO, and TFDS warns of every config built
  with changed settings. An explicit --verbosity still wins."""
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.ERROR)
    # Imported here: launchers that never touch TFDS (fetch_audio) would
    # otherwise pay a second for it at every start.
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    tfds.disable_progress_bar()  # the build prints its own progress


def _start_job() -> None:
  """Joins the processes of a run on several, and refuses configs that
  differ between them."""
  distributed.initialize(_COORDINATOR_ADDRESS.value, _NUM_PROCESSES.value,
                         _PROCESS_ID.value, _DISTRIBUTED_TIMEOUT.value)
  for name in flags.FLAGS:
    flag = flags.FLAGS[name]
    if config_flags.is_config_flag(flag) and flag.value is not None:
      distributed.check_same_everywhere(
          f"--{name}", flag.value.to_json_best_effort(sort_keys=True),
          _DISTRIBUTED_TIMEOUT.value)


def _guarded(main, handling: interrupts.Interrupts, argv):
  _quiet_library_logs()
  try:
    _start_job()
    status = main(argv)
  except Exception as error:  # pylint: disable=broad-except
    if not is_user_error(error) or debug_requested():
      raise
    fail(message(error),
         USAGE_EXIT if isinstance(error, app.UsageError) else ERROR_EXIT)
  # Interrupted, and something swallowed it: never report success.
  handling.raise_if_interrupted()
  return status


def run(main) -> None:
  """Runs `main(argv)` as absl's app.run does, with one-line user errors
  and interruptions."""
  handling = interrupts.install()
  compilation_cache.enable()  # before the first compilation
  try:
    app.run(functools.partial(_guarded, main, handling),
            flags_parser=_parse_flags)
  except interrupts.INTERRUPTIONS as error:
    # The run's cleanup ran while unwinding; Python's teardown would race
    # XLA threads still compiling (ctxtag.interrupts).
    handling.end(error, show_traceback=debug_requested(), teardown=False)
  except SystemExit as done:  # app.run's end, a usage error's too
    handling.finish(done.code)
