"""How every launcher starts and ends: `cli.run(main)` instead of `app.run`.

A user's mistake (a bad flag, config file, override, table row or setting, a
missing workdir file, a full disk) ends with one line on stderr,
`error: <message>`, whose message names the file, row or setting, and exit
status 1 (2 for a bad command line). Any other exception is a bug and keeps
its traceback. `--debug` shows the traceback of user errors too.

Ctrl-C (SIGINT) and SIGTERM end a launcher with one line, "interrupted;
rerun the same command to resume", and exit status 130 or 143: the signal
raises KeyboardInterrupt or `errors.Terminated` in the main thread, which
unwinds through the library's cleanup. Worker processes (audio decoding
pools, grain's batch workers) leave interruptions to the launcher, which
stops them. A signal that something swallows is delivered again, and a main
thread stuck in native code (a compile, a wait on other hosts) ends the
process after a grace period.

Every launcher also takes `--coordinator_address`, `--num_processes`,
`--process_id` and `--distributed_timeout`, to run on several processes
(hosts) as one job (ctxtag.distributed); the job starts, and the processes'
configs are compared, before `main` runs.
"""

import os
import signal
import sys


def _exit_during_imports(signum, frame):
  """Before `run` starts there is nothing to clean up: end at once."""
  del frame
  os.write(2, b"interrupted; rerun the same command to resume\n")
  os._exit(128 + signum)  # pylint: disable=protected-access


# A launcher imports this module first, so that a Ctrl-C during its seconds
# of imports (jax, TFDS, scipy) is one line too, not a traceback from deep
# in an import. Only where a launcher is the program: not in tests, not in
# a spawned worker (whose __main__ is multiprocessing's).
if getattr(getattr(sys.modules.get("__main__"), "__spec__", None), "name",
           "").startswith("launch."):
  for _signum in (signal.SIGINT, signal.SIGTERM):
    if signal.getsignal(_signum) is not signal.SIG_IGN:
      signal.signal(_signum, _exit_during_imports)

# pylint: disable=g-import-not-at-top,wrong-import-position
import difflib
import errno
import gc
import importlib.machinery
import importlib.util
import multiprocessing
import threading
import time

from absl import app
from absl import flags
from absl import logging
import ml_collections
from ml_collections.config_flags import config_flags

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
INTERRUPTED = "interrupted; rerun the same command to resume"
# The shell's convention: 128 + the signal's number.
INTERRUPT_EXITS = {signal.SIGINT: 130, signal.SIGTERM: 143}


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


# --- config files -----------------------------------------------------------


class ConfigFileError(errors.UserError):
  """A --config file that is missing, does not parse, or has no
  get_config(); or an override of a key the config does not have."""


# Errors met while a config flag parsed, reported once flag parsing ends:
# absl parses a flag's default when the launcher defines it, at import.
_CONFIG_ERRORS: list[ConfigFileError] = []
_CONFIG_FLAGS: list[flags.Flag] = []


def _load_config_file(name: str, argument: str):
  """The config that `--name=argument` names: get_config() of a Python
  file, called with the text after a ':' if any."""
  path, colon, config_string = argument.partition(":")
  expected = ("expected a Python file defining get_config(), such as"
              " ctxtag/configs/default.py")
  if not os.path.isfile(path):
    what = "is a directory" if os.path.isdir(path) else "no such file"
    raise ConfigFileError(f"--{name}={argument}: {what}; {expected}")
  loader = importlib.machinery.SourceFileLoader(f"{name}_config", path)
  module = importlib.util.module_from_spec(
      importlib.util.spec_from_loader(loader.name, loader))
  try:
    loader.exec_module(module)
  except SyntaxError as error:
    raise ConfigFileError(
        f"--{name}={argument}, line {error.lineno}: {error.msg}; {expected}"
        ) from None
  get_config = getattr(module, "get_config", None)
  if not callable(get_config):
    raise ConfigFileError(f"--{name}={argument}: defines no get_config();"
                          f" {expected}")
  config = get_config(*([config_string] if colon else []))
  if not isinstance(config, ml_collections.ConfigDict):
    raise ConfigFileError(
        f"--{name}={argument}: get_config() returned"
        f" {type(config).__name__}, expected an ml_collections.ConfigDict")
  return config


def _dotted_keys(config, prefix: str = "") -> list[str]:
  keys = []
  for key, value in config.items():
    keys.append(prefix + key)
    if isinstance(value, ml_collections.ConfigDict):
      keys += _dotted_keys(value, f"{prefix}{key}.")
  return keys


def _check_override(name: str, config, override: str) -> None:
  """Refuses `--name.override` naming a key `config` lacks, with the
  closest keys it has."""
  node = config
  for part in override.split("."):
    if not isinstance(node, ml_collections.ConfigDict) or "[" in part:
      return  # a field ml_collections parses itself (dataclass, index)
    if part not in node:
      known = _dotted_keys(config)
      close = difflib.get_close_matches(override, known, n=3, cutoff=0.6)
      top = sorted(key for key in known if "." not in key)
      hint = (f"closest: {', '.join(close)}" if close
              else f"its keys: {', '.join(top)}")
      raise ConfigFileError(f"--{name}.{override}: the config has no key"
                            f" {override}; {hint}")
    node = node[part]


# pylint: disable-next=protected-access
class _ConfigFileFlag(config_flags._ConfigFlag):
  """ml_collections' config file flag whose file and overrides are checked
  first, so a mistake is one line rather than a traceback."""

  def _parse(self, argument):
    try:
      config = _load_config_file(self.name, argument)
      for override in self._GetOverrides(self._GetArgv()):
        _check_override(self.name, config, override)
    except ConfigFileError as error:
      _CONFIG_ERRORS.append(error)
      return None
    return super()._parse(argument)


def define_config_file(name: str, default: str, help_string: str):
  """config_flags.DEFINE_config_file (lock_config=True), with a missing or
  broken file and a misspelt override reported in one line.

  Args:
    name: the flag's name.
    default: the config file used without the flag.
    help_string: the flag's help.

  Returns:
    The flag's holder; its value is the (overridden) ConfigDict.
  """
  flag = _ConfigFileFlag(
      parser=config_flags.ConfigFileFlagParser(name=name, lock_config=True),
      serializer=flags.ArgumentSerializer(), name=name, default=default,
      help_string=help_string, flag_values=flags.FLAGS)
  _CONFIG_FLAGS.append(flag)
  return flags.DEFINE_flag(flag, flags.FLAGS)


def _report_config_errors() -> None:
  if _CONFIG_ERRORS:
    _fail(message(_CONFIG_ERRORS[0]), USAGE_EXIT)


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with a bad flag or config reported in one line."""
  try:
    remaining = flags.FLAGS(argv)
  except flags.Error as error:
    # An override of a config that failed to load is "unknown": say why.
    _report_config_errors()
    _fail(f"{message(error)} (see --helpshort)", USAGE_EXIT)
  _report_config_errors()
  return remaining


def _debug_requested() -> bool:
  if flags.FLAGS.is_parsed():
    return _DEBUG.value
  return "--debug" in sys.argv


# --- interruptions ------------------------------------------------------------


# A main thread stuck in native code never runs a Python signal handler:
# after this long the watcher ends the process itself. Resuming is safe
# after any stop (checkpoints survive SIGKILL).
_STUCK_GRACE_S = 5.0
# How long the unwinding after an interruption (cleanup, joining threads,
# the distributed runtime's shutdown) may take before the process ends.
_UNWIND_GRACE_S = 20.0


class _Interruption:
  """The first interrupting signal and whether the main thread saw it."""

  def __init__(self):
    self.signum = None
    self.seen = threading.Event()
    self.lock = threading.Lock()
    self.redelivered = False  # the next signal is our own, not the user's
    self.reported = False


_INTERRUPTION = _Interruption()
_MAIN_PID = os.getpid()


def _exit_now(signum: int) -> None:
  """Ends the process at once with the interruption's line and status."""
  try:
    if not _INTERRUPTION.reported:
      os.write(2, f"{INTERRUPTED}\n".encode())
  finally:
    # pylint: disable-next=protected-access
    os._exit(INTERRUPT_EXITS.get(signum, 130))


def _interrupt_error(signum: int) -> BaseException:
  return KeyboardInterrupt() if signum == signal.SIGINT else (
      errors.Terminated())


def _on_signal(signum, frame):
  """Raises the interruption in the main thread (KeyboardInterrupt for
  SIGINT, errors.Terminated for SIGTERM); a second signal ends at once."""
  if os.getpid() != _MAIN_PID:  # a forked child that kept the handler
    signal.signal(signum, signal.SIG_DFL)
    if signum == signal.SIGTERM:
      os.kill(os.getpid(), signum)
    return
  with _INTERRUPTION.lock:
    first = _INTERRUPTION.signum is None
    if first:
      _INTERRUPTION.signum = signum
    again, _INTERRUPTION.redelivered = _INTERRUPTION.redelivered, False
  if not first and not again and _INTERRUPTION.seen.is_set():
    _exit_now(_INTERRUPTION.signum)  # asked twice: do not wait for cleanup
  _INTERRUPTION.seen.set()
  if _in_gc_callback(frame):
    _redeliver_soon()  # raised here, Python would print and drop it
    return
  raise _interrupt_error(_INTERRUPTION.signum)


def _in_gc_callback(frame) -> bool:
  codes = {getattr(callback, "__code__", None) for callback in gc.callbacks}
  while frame is not None:
    if frame.f_code in codes:
      return True
    frame = frame.f_back
  return False


def _redeliver_soon() -> None:
  """Sends the interruption's signal again shortly, from another thread,
  so that its handler runs in ordinary code."""
  def again():
    _INTERRUPTION.redelivered = True
    os.kill(os.getpid(), _INTERRUPTION.signum)
  threading.Timer(0.02, again).start()


def _redeliver_swallowed(unraisable, previous=sys.unraisablehook):
  """A KeyboardInterrupt raised inside a __del__ or a weakref callback is
  printed as "Exception ignored" and dropped, and the run goes on (as one
  raised in jax's garbage-collector callback did, in launch.evaluate, which
  then exited 0): send the signal again, so it lands in ordinary code."""
  if (_INTERRUPTION.signum is not None and unraisable.exc_type is not None
      and issubclass(unraisable.exc_type, (KeyboardInterrupt,
                                           errors.Terminated))):
    _redeliver_soon()
    return
  previous(unraisable)


def _watch(read_fd: int) -> None:
  """Ends the process when a signal arrived but the main thread does not
  run its Python handler (stuck in native code), or when unwinding after
  it takes too long."""
  while True:
    try:
      received = os.read(read_fd, 64)
    except InterruptedError:
      continue
    except OSError:
      return
    signums = [s for s in received if s in INTERRUPT_EXITS]
    if not signums:
      continue
    signum = _INTERRUPTION.signum or signums[0]
    if not _INTERRUPTION.seen.wait(_STUCK_GRACE_S):
      _exit_now(signum)
    time.sleep(_UNWIND_GRACE_S)
    _exit_now(_INTERRUPTION.signum or signum)


def _in_worker_child() -> None:
  """In a forked worker: interruptions are the launcher's to handle (it
  stops its pools), so Ctrl-C at the terminal, which reaches the whole
  process group, is ignored, and SIGTERM (a pool's terminate) ends quietly."""
  try:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.set_wakeup_fd(-1)
  except ValueError:  # forked from a thread other than the main one
    pass


def _spawned_worker() -> bool:
  """Whether this process is a multiprocessing child importing the
  launcher's main module (spawned workers do)."""
  return bool(getattr(multiprocessing.current_process(), "_inheriting",
                      False))


def install_interrupt_handling() -> None:
  """Routes SIGINT and SIGTERM as the module docstring says; in a spawned
  worker process, makes them the launcher's alone."""
  if _spawned_worker():
    _in_worker_child()
    return
  if threading.current_thread() is not threading.main_thread():
    return
  global _MAIN_PID
  _MAIN_PID = os.getpid()
  read_fd, write_fd = os.pipe()
  os.set_blocking(write_fd, False)
  for signum in INTERRUPT_EXITS:
    # A background job of a shell ignores Ctrl-C at the terminal: so do we.
    if signal.getsignal(signum) is not signal.SIG_IGN:
      signal.signal(signum, _on_signal)
  signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
  sys.unraisablehook = _redeliver_swallowed
  os.register_at_fork(after_in_child=_in_worker_child)
  threading.Thread(target=_watch, args=(read_fd,), name="ctxtag-interrupts",
                   daemon=True).start()


def _end_interrupted(error: BaseException) -> None:
  signum = (_INTERRUPTION.signum if _INTERRUPTION.signum is not None
            else signal.SIGTERM if isinstance(error, errors.Terminated)
            else signal.SIGINT)
  _INTERRUPTION.seen.set()
  if _debug_requested():
    import traceback  # pylint: disable=g-import-not-at-top
    traceback.print_exception(error)
  print(INTERRUPTED, file=sys.stderr, flush=True)
  _INTERRUPTION.reported = True
  sys.exit(INTERRUPT_EXITS[signum])


# A spawned worker imports the launcher's main module, and so this one,
# before it runs: from then on the terminal's Ctrl-C is not its to handle.
if _spawned_worker():
  _in_worker_child()


# --- the guarded main ------------------------------------------------------


def refuse_empty(name: str) -> None:
  """Refuses an empty value of the path flag `name` at parsing (an empty
  path would silently mean the current directory)."""
  flags.register_validator(
      name, lambda value: value is None or bool(value.strip()),
      message="expected a path, got an empty value")


def quiet_library_logs() -> None:
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
  for flag in _CONFIG_FLAGS:
    if flag.value is not None:
      distributed.check_same_everywhere(
          f"--{flag.name}", flag.value.to_json_best_effort(sort_keys=True),
          _DISTRIBUTED_TIMEOUT.value)


def _guarded(main):
  def guarded_main(argv):
    quiet_library_logs()
    try:
      _start_job()
      status = main(argv)
    except Exception as error:  # pylint: disable=broad-except
      if not is_user_error(error) or _debug_requested():
        raise
      status = USAGE_EXIT if isinstance(error, app.UsageError) else ERROR_EXIT
      _fail(message(error), status)
    if _INTERRUPTION.signum is not None:
      # Interrupted, and something swallowed it: never report success.
      _end_interrupted(_interrupt_error(_INTERRUPTION.signum))
    return status
  return guarded_main


def run(main) -> None:
  """Runs `main(argv)` as absl's app.run does, with one-line user errors
  and interruptions."""
  install_interrupt_handling()
  try:
    app.run(_guarded(main), flags_parser=_parse_flags)
  except (KeyboardInterrupt, errors.Terminated) as error:
    _end_interrupted(error)
