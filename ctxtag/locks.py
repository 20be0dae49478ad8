"""Advisory locks: one run per workdir, one build per dataset directory.

A lock is `fcntl.flock` on a file in the directory it guards:
`<workdir>/.lock` for a run (and for `launch.evaluate --workdir`, which
rewrites the run's report), `<data_dir>/contextual_tags/<config>/.build.lock`
for a build of that dataset (where TFDS puts its `incomplete.*` directories).
The two never meet, so a run that holds its workdir can still build its
dataset into `<workdir>/data`.

A second process that finds a directory locked ends at once with one line
naming the directory and the process that holds it: the holder writes its
pid, host and command line into the lock file once it has the lock. The
kernel drops a flock when the last descriptor of its open file closes, so a
lock of a killed process never blocks the next one; forked children (worker
pools) close their copy of the descriptor, so a killed run's workers do not
keep its lock either. The last holder deletes the lock file as it lets go,
and a newcomer that locked a file deleted meanwhile tries again, so the
deletion never lets two processes hold one lock.

Locks are held per process and re-entrantly: taking a lock the process
already holds does nothing, so `run.reproduce` and the `prepare_run` it
calls share one. In a run on several processes only process 0 takes them
(the others write nothing).
"""

import atexit
import contextlib
import dataclasses
import errno
import fcntl
import os
import shlex
import socket
import sys
import threading

from ctxtag import errors
from ctxtag import files

RUN_LOCK = ".lock"
BUILD_LOCK = ".build.lock"
RUN_RULE = "one run at a time per workdir"
BUILD_RULE = "one build at a time per dataset directory"
# What the holder's command line may take of a message.
_MAX_COMMAND_CHARS = 300


class BusyError(errors.UserError, RuntimeError):
  """A directory that another process is using (a run or a build)."""


@dataclasses.dataclass
class _Held:
  """One lock this process holds."""
  path: str  # the lock file
  fd: int
  shared: bool
  created: list[str]  # directories made to hold the lock file, deepest first
  count: int = 1  # `held` blocks and `keep` calls that share it


_HELD: dict[str, _Held] = {}
_MUTEX = threading.Lock()


def _forget_in_child() -> None:
  """A forked child closes its copies of the lock descriptors and forgets
  them: the locks are the parent's and must die with it."""
  for held in _HELD.values():
    with contextlib.suppress(OSError):
      os.close(held.fd)
  _HELD.clear()


os.register_at_fork(after_in_child=_forget_in_child)


def _command() -> str:
  argv = list(getattr(sys, "orig_argv", None) or [sys.executable] + sys.argv)
  if argv:
    argv[0] = os.path.basename(argv[0])
  text = shlex.join(argv)
  if len(text) > _MAX_COMMAND_CHARS:
    text = text[:_MAX_COMMAND_CHARS - 3] + "..."
  return text


def _holder_text() -> bytes:
  return (f"{os.getpid()}\n{socket.gethostname()}\n{_command()}\n"
          ).encode("utf-8", "replace")


def holder(lock_path: str) -> str:
  """Who holds the lock file `lock_path`, as its holder wrote it: "process
  PID (COMMAND)", with the host when it is another; "another process" when
  nothing (yet) is written."""
  try:
    with open(lock_path, encoding="utf-8", errors="replace") as f:
      lines = f.read().splitlines()
  except OSError:
    lines = []
  if not lines or not lines[0].strip().isdigit():
    return "another process"
  pid = lines[0].strip()
  host = lines[1].strip() if len(lines) > 1 else ""
  command = lines[2].strip() if len(lines) > 2 else ""
  where = f" on {host}" if host and host != socket.gethostname() else ""
  return f"process {pid}{where}" + (f" ({command})" if command else "")


def _make_dirs(directory: str) -> list[str]:
  """Makes `directory` and its missing parents; returns those it made,
  deepest first."""
  missing = []
  path = directory
  while not os.path.isdir(path):
    missing.append(path)
    parent = os.path.dirname(path)
    if parent == path:
      break
    path = parent
  os.makedirs(directory, exist_ok=True)
  return missing


def _acquire(directory: str, name: str, shared: bool, rule: str) -> _Held:
  directory = files.absolute(directory)
  try:
    created = _make_dirs(directory)
  except OSError as error:
    raise errors.UserError(
        f"{directory}: cannot create it to lock it"
        f" ({error.strerror or error})") from error
  path = os.path.join(directory, name)
  while True:
    try:
      fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as error:
      raise errors.UserError(f"{path}: cannot open the lock file"
                             f" ({error.strerror or error})") from error
    try:
      fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
                  | fcntl.LOCK_NB)
    except OSError as error:
      os.close(fd)
      if error.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
        raise errors.UserError(f"{path}: cannot lock it"
                               f" ({error.strerror or error})") from error
      raise BusyError(f"{directory} is in use by {holder(path)}: {rule};"
                      " wait for it to end, or stop it") from None
    # The previous holder may have deleted the file between our open and
    # our lock: then a newcomer could lock a new file at the same path.
    try:
      same = os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
      same = False
    if same:
      break
    os.close(fd)
  # Written in place, not by files.atomic_open: a rename would put another
  # file (unlocked) at the path.
  os.ftruncate(fd, 0)
  os.pwrite(fd, _holder_text(), 0)
  return _Held(path, fd, shared, created)


def _release(held: _Held) -> None:
  """Lets go of `held`; the last holder deletes the lock file, and the
  directories it made if they are empty."""
  try:
    last = True
    if held.shared:
      try:
        fcntl.flock(held.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except OSError:
        last = False  # other readers hold it: they delete it
    if last:
      with contextlib.suppress(OSError):
        os.remove(held.path)
      for directory in held.created:
        with contextlib.suppress(OSError):
          os.rmdir(directory)
  finally:
    os.close(held.fd)


def _key(directory: str, name: str) -> str:
  return os.path.join(os.path.realpath(files.absolute(directory)), name)


def _take(directory: str, name: str, shared: bool, rule: str) -> str:
  key = _key(directory, name)
  with _MUTEX:
    held = _HELD.get(key)
    if held is not None:
      held.count += 1
      return key
    _HELD[key] = _acquire(directory, name, shared, rule)
    return key


def _drop(key: str) -> None:
  with _MUTEX:
    held = _HELD.get(key)
    if held is None:
      return
    held.count -= 1
    if held.count > 0:
      return
    del _HELD[key]
  _release(held)


@contextlib.contextmanager
def held(directory: str, name: str = RUN_LOCK, rule: str = "",
         shared: bool = False, enabled: bool = True):
  """Holds the lock `name` of `directory` while the block runs.

  Re-entrant: if this process already holds it, the block shares it.
  `directory` is made if missing, and removed again at the end if it is
  still empty (a refused run leaves nothing behind).

  Args:
    directory: the directory to guard.
    name: the lock file's name (RUN_LOCK, BUILD_LOCK).
    rule: what the lock stands for, for the busy message, e.g. "one run at
      a time per workdir".
    shared: take a shared lock (several readers), not an exclusive one.
    enabled: False makes it a no-op (processes other than 0 of a run on
      several).

  Yields:
    The lock file's path, or None when not enabled.

  Raises:
    BusyError: another process holds it; names the directory and the
      holder.
  """
  if not enabled:
    yield None
    return
  key = _take(directory, name, shared, rule or "one process at a time")
  try:
    yield key
  finally:
    _drop(key)


def keep(directory: str, name: str = RUN_LOCK, rule: str = "",
         shared: bool = False) -> None:
  """Takes the lock `name` of `directory` unless this process holds it,
  and keeps it until `release_kept` or the process ends.

  For library calls that start a run without a `held` block around it
  (run.prepare_run): the run lasts beyond the call. `shared`: a reader's
  lock, which other readers share and a builder needs alone.

  Raises:
    BusyError: another process holds it.
  """
  key = _key(directory, name)
  with _MUTEX:
    if key not in _HELD:
      _HELD[key] = _acquire(directory, name, shared,
                            rule or "one process at a time")


def release_kept(directory: str, name: str = RUN_LOCK) -> None:
  """Lets go of a lock taken with `keep` (if this process holds it)."""
  _drop(_key(directory, name))


def holds(directory: str, name: str = RUN_LOCK) -> bool:
  """Whether this process holds the lock `name` of `directory`."""
  return _key(directory, name) in _HELD


def run_lock(workdir: str):
  """The workdir lock of a run (a context manager): held on process 0 only,
  of a run on several."""
  from ctxtag import distributed  # pylint: disable=g-import-not-at-top
  return held(workdir, RUN_LOCK, RUN_RULE, enabled=distributed.is_main())


def _release_all_at_exit() -> None:
  for key in list(_HELD):
    held_lock = _HELD.pop(key)
    with contextlib.suppress(OSError):
      _release(held_lock)


atexit.register(_release_all_at_exit)
