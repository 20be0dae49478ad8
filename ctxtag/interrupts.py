"""Ctrl-C and SIGTERM for a command-line program: one line, the shell's exit
status, and never a run that carries on.

`install()` makes SIGINT raise KeyboardInterrupt and SIGTERM raise
`Terminated` in the main thread, so that a run unwinds through its cleanup
(`finally`, context managers); `Interrupts.end` then prints "interrupted;
rerun the same command to resume" and exits 130 or 143 (128 + the signal's
number). Resuming is safe after any stop: checkpoints survive even SIGKILL.

Three ways an interruption could be lost are closed:
- Python prints and drops an exception raised in a __del__, a weakref
  callback or a garbage-collector callback (jax's gc callback swallowed one,
  and an evaluation then went on and exited 0): the signal is delivered again
  in the main thread until it lands in ordinary code;
- a main thread in native code (a compile, a wait on other hosts) never runs
  a Python handler: a thread that watches the signals' wakeup fd ends the
  process after `stuck_grace_s`;
- cleanup that hangs: the same thread ends the process `unwind_grace_s`
  after the signal.
A second signal while the first unwinds ends the process at once.

Three ways a signal could crash or litter the terminal are closed too:
- a signal after the run's end: Python's teardown restores the default
  handlers, then takes seconds (jax's runtime), so a late Ctrl-C killed the
  process without a word. A program that ran to its end therefore leaves
  through `Interrupts.finish` (threads joined, atexit functions run,
  `os._exit`), a signal meanwhile ending it at once with the line;
- a signal during a compile: jax's compile waits notice it and raise, but
  XLA's own threads go on compiling, and jax's teardown at interpreter exit
  destroys the devices they still use (a segmentation fault). An
  interrupted program therefore ends with `os._exit` once its own cleanup
  has run while unwinding, stdio and logs are flushed and child processes
  are stopped (`Interrupts.end(..., teardown=False)`);
- a signal inside a library's bookkeeping that must not stop halfway
  (orbax starting or finishing a checkpoint save logs a traceback and leaves
  its event loop half made): such code runs in `deferred()`, which holds the
  interruption until the block is done.

Worker processes (audio decoding pools, grain's batch workers) leave
interruptions to the launcher, which stops them: forked ones from the fork
on, spawned ones from the moment they import the launcher's module
(`before_imports`).
"""

import _thread
import atexit
import contextlib
import functools
import logging
import multiprocessing
import multiprocessing.util
import os
import signal
import sys
import threading
import time
import traceback

MESSAGE = "interrupted; rerun the same command to resume"
# The shell's convention: 128 + the signal's number.
EXIT_STATUS = {signal.SIGINT: 130, signal.SIGTERM: 143}
STUCK_GRACE_S = 5.0
# Cleanup, joining threads and the distributed runtime's shutdown.
UNWIND_GRACE_S = 20.0
# How long each child process may take to end at an interrupted exit.
CHILD_GRACE_S = 2.0


class Terminated(BaseException):
  """SIGTERM, raised in the main thread as Ctrl-C raises KeyboardInterrupt:
  a BaseException, so that no `except Exception` swallows it, and cleanup
  (`finally`) still runs."""


INTERRUPTIONS = (KeyboardInterrupt, Terminated)


def _error(signum: int) -> BaseException:
  return KeyboardInterrupt() if signum == signal.SIGINT else Terminated()


def _exit_at_once(signum, frame):
  del frame
  with contextlib.suppress(Exception):  # stderr closed, or a broken pipe
    sys.stderr.flush()
  os.write(2, f"{MESSAGE}\n".encode())
  os._exit(EXIT_STATUS[signum])  # pylint: disable=protected-access


def _route_signals(handler) -> None:
  """`handler` for SIGINT and SIGTERM, except one this process ignores: a
  background job of a shell ignores Ctrl-C at the terminal, and so do we."""
  for signum in EXIT_STATUS:
    if signal.getsignal(signum) is not signal.SIG_IGN:
      signal.signal(signum, handler)


def leave_to_parent() -> None:
  """Makes this process a worker whose interruptions are its parent's: the
  terminal's Ctrl-C, which reaches the whole process group, is ignored, and
  SIGTERM (a pool's terminate) ends it quietly."""
  try:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # An inherited wakeup fd would tell the parent's watcher of our signals.
    signal.set_wakeup_fd(-1)
  except ValueError:  # forked from a thread other than the main one
    pass


def before_imports(module_name: str) -> None:
  """What a launcher calls first, with its `__name__`, ahead of its imports.

  Those take seconds (jax, TFDS, scipy), and `install` comes only after
  them. As the program (`__main__`), a signal until then ends the process at
  once with the one line: there is nothing to clean up yet, and Python's
  default would be a traceback from deep in an import. As a worker that
  multiprocessing spawned, which imports the launcher's module as
  `__mp_main__`, interruptions are the parent's from here on. Imported any
  other way (a test, another launcher), it changes nothing.

  Args:
    module_name: the calling module's `__name__`.
  """
  if module_name == "__main__":
    _route_signals(_exit_at_once)
  elif module_name == "__mp_main__":
    leave_to_parent()


class Interrupts:
  """The interruption handling of this process, as `install` sets it up.

  Attributes:
    signum: the first interrupting signal, None before one.
    seen: set once the main thread ran the handler of one (or ends anyway).
  """

  def __init__(self, stuck_grace_s: float = STUCK_GRACE_S,
               unwind_grace_s: float = UNWIND_GRACE_S):
    self.signum = None
    self.seen = threading.Event()
    self._pid = os.getpid()
    self._grace_s = (stuck_grace_s, unwind_grace_s)
    self._redelivering = False  # the next handler call is ours, not a user's
    self._reported = False
    self._deferring = 0  # how many deferred() blocks the main thread is in
    self._held = False  # a signal arrived in one, to raise at its end

  def _on_signal(self, signum, frame):
    del frame
    if os.getpid() != self._pid:  # a child forked past Python's fork hooks
      leave_to_parent()
      if signum == signal.SIGTERM:
        os.kill(os.getpid(), signum)
      return
    again = self.signum is not None and not self._redelivering
    self.signum = self.signum or signum
    self._redelivering = False
    if again:
      self._exit_now()  # asked twice: do not wait for cleanup
    self.seen.set()
    if self._deferring:
      self._held = True
      return
    raise _error(self.signum)

  @contextlib.contextmanager
  def deferred(self):
    """See the module's `deferred`."""
    if threading.current_thread() is not threading.main_thread():
      yield  # signals are the main thread's alone
      return
    self._deferring += 1
    try:
      yield
    finally:
      self._deferring -= 1
      if not self._deferring and self._held:
        self._held = False
        # pylint: disable-next=lost-exception
        raise _error(self.signum)

  def _on_unraisable(self, previous_hook, unraisable):
    if (self.signum is not None and unraisable.exc_type is not None
        and issubclass(unraisable.exc_type, INTERRUPTIONS)):
      # Swallowed: again, shortly and from another thread, since raised at
      # once it would land in this hook. Sooner or later it lands in
      # ordinary code.
      self._redelivering = True
      threading.Timer(0.02, _thread.interrupt_main, (self.signum,)).start()
      return
    previous_hook(unraisable)

  def _watch(self, read_fd: int) -> None:
    """Ends the process when the main thread does not run the handler of a
    signal that arrived (stuck in native code), or when unwinding after it
    takes too long."""
    signums = []
    while not signums:
      signums = [s for s in os.read(read_fd, 64) if s in EXIT_STATUS]
    stuck_grace_s, unwind_grace_s = self._grace_s
    if self.seen.wait(stuck_grace_s):
      time.sleep(unwind_grace_s)
    self.signum = self.signum or signums[0]
    self._exit_now()

  def _exit_now(self) -> None:
    try:
      if not self._reported:
        os.write(2, f"{MESSAGE}\n".encode())
    finally:
      # pylint: disable-next=protected-access
      os._exit(EXIT_STATUS.get(self.signum, 130))

  def raise_if_interrupted(self) -> None:
    """Raises the interruption if one arrived: for a caller about to report
    success after something swallowed it."""
    if self.signum is not None:
      raise _error(self.signum)

  def end(self, error: BaseException, show_traceback: bool = False,
          teardown: bool = True) -> None:
    """Ends the process as interrupted by `error`, the KeyboardInterrupt or
    Terminated that unwound the run: the one line, and 130 or 143.

    Args:
      error: the interruption.
      show_traceback: print its traceback before the line.
      teardown: end through SystemExit, with Python's teardown at exit
        (atexit functions, module cleanup); False ends with `os._exit`
        once stdio and logs are flushed and child processes stopped, as a
        program does (see the module docstring: a compile may still be
        running in native threads).
    """
    if self.signum is None:
      self.signum = (signal.SIGTERM if isinstance(error, Terminated)
                     else signal.SIGINT)
    self.seen.set()
    if show_traceback:
      traceback.print_exception(error)
    print(MESSAGE, file=sys.stderr, flush=True)
    self._reported = True
    if teardown:
      sys.exit(EXIT_STATUS[self.signum])
    _leave(EXIT_STATUS[self.signum])

  def finish(self, code) -> None:
    """Ends a program that ran to its end (`SystemExit(code)`) the way
    Python would, its threads joined and atexit functions run, but without
    Python's own teardown: that restores the default handlers first and then
    takes a second or more (jax's runtime), during which a signal killed
    the process silently (status -2). A signal until the end is the
    interruption's line and status, at once: the run is done, there is
    nothing left to unwind.
    """
    _route_signals(_exit_at_once)
    if self.signum is not None:  # arrived as the run returned
      _exit_at_once(self.signum, None)
    _join_threads()
    atexit._run_exitfuncs()  # pylint: disable=protected-access
    _leave(_exit_status(code))


def _exit_status(code) -> int:
  """The status SystemExit(code) gives (None: 0; text: printed, 1)."""
  if code is None:
    return 0
  if isinstance(code, int):
    return code
  print(code, file=sys.stderr, flush=True)
  return 1


def _join_threads() -> None:
  """What Python does first at exit: waits for the non-daemon threads (a
  background checkpoint save)."""
  for thread in threading.enumerate():
    if thread is not threading.current_thread() and not thread.daemon:
      thread.join()


def _leave(status: int) -> None:
  """Ends the process with `status` and without Python's teardown, doing
  what of it an interrupted program still needs."""
  try:
    # What multiprocessing does at exit: its finalizers (a pool's
    # semaphores, else reported leaked by its resource tracker), daemonic
    # children terminated, all joined. Its function is private: without
    # it, the children are stopped here.
    exit_function = getattr(multiprocessing.util, "_exit_function", None)
    if exit_function is not None:
      exit_function()
    else:
      children = multiprocessing.active_children()
      for child in children:
        child.terminate()
      for child in children:
        child.join(CHILD_GRACE_S)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
      with contextlib.suppress(Exception):  # closed, or a broken pipe
        stream.flush()
  finally:
    os._exit(status)  # pylint: disable=protected-access


# The handling `install` set up in this process, for `deferred`.
_installed: Interrupts | None = None


def deferred():
  """A context manager that holds an interruption of the main thread until
  its block ends, then raises it there: for code that must not stop
  halfway (a checkpoint save's bookkeeping). A second signal still ends
  the process at once, and a block that keeps running `unwind_grace_s`
  after the signal is ended with the process. Without `install` (a
  library, a test), it holds nothing.
  """
  handling = _installed
  # pylint: disable-next=protected-access
  if handling is None or os.getpid() != handling._pid:  # or a forked child
    return contextlib.nullcontext()
  return handling.deferred()


def install(stuck_grace_s: float = STUCK_GRACE_S,
            unwind_grace_s: float = UNWIND_GRACE_S) -> Interrupts:
  """Routes SIGINT and SIGTERM of this process as the module docstring says.

  Call it once, from the main thread of the program, before its work.

  Args:
    stuck_grace_s: how long a main thread that does not run Python may take
      to notice a signal before the process ends.
    unwind_grace_s: how long the unwinding after a signal may take.

  Returns:
    The handling, whose `end` finishes an interrupted run.
  """
  # pylint: disable=protected-access
  global _installed
  handling = _installed = Interrupts(stuck_grace_s, unwind_grace_s)
  read_fd, write_fd = os.pipe()
  os.set_blocking(write_fd, False)
  _route_signals(handling._on_signal)
  signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
  sys.unraisablehook = functools.partial(handling._on_unraisable,
                                         sys.unraisablehook)
  os.register_at_fork(after_in_child=leave_to_parent)
  threading.Thread(target=handling._watch, args=(read_fd,),
                   name="ctxtag-interrupts", daemon=True).start()
  return handling
