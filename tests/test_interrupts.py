"""Ctrl-C (SIGINT) and SIGTERM end a launcher with one line and exit 130 or
143 (ctxtag.interrupts, installed by launch.cli.run), worker processes
included, at any moment: during the first compile, a checkpoint save in
flight; a rerun resumes. The subprocess tests start a real process and
signal its whole process group, as a terminal's Ctrl-C does."""

import collections
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from ctxtag import interrupts

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LINE = "interrupted; rerun the same command to resume"


def _restore_sigint():
  # A background job (a CI runner, `pytest &`) inherits SIGINT ignored, and
  # a launcher keeps it so: the child must see Ctrl-C as a terminal's job.
  signal.signal(signal.SIGINT, signal.SIG_DFL)


# Signals must land while XLA really compiles: a program loaded from the
# compilation cache would skip the moment these tests are about.
_UNCACHED = dict(os.environ, CTXTAG_COMPILATION_CACHE="off")


def _start(args: list[str]) -> subprocess.Popen:
  return subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, env=_UNCACHED,
                          start_new_session=True, preexec_fn=_restore_sigint)


class _Lines:
  """A process's lines on one stream, read as they come (training prints
  its progress on stderr; the scripts below say "ready" on stdout)."""

  def __init__(self, process: subprocess.Popen, stream: str = "stdout"):
    self.stream, self.lines = stream, []
    self.thread = threading.Thread(target=self._read,
                                   args=(getattr(process, stream),))
    self.thread.start()

  def _read(self, pipe):
    for line in pipe:
      self.lines.append(line)

  def wait_for(self, text: str | tuple[str, ...], process,
               seconds: float = 300) -> None:
    """Waits for a line holding `text` (or one of several)."""
    texts = (text,) if isinstance(text, str) else text
    deadline = time.time() + seconds
    while not any(t in line for line in self.lines for t in texts):
      assert process.poll() is None, f"ended early: {''.join(self.lines)}"
      assert time.time() < deadline, f"no {text!r} in {seconds} s"
      time.sleep(0.02)


def _signal_and_wait(process: subprocess.Popen, signum: int,
                     lines: _Lines | None = None) -> str:
  """Signals the process's group; returns what it printed on stderr after
  the signal, less progress lines already on their way (`[model] ...`).
  With `lines`, they hold all that the process printed on their stream."""
  reading_stderr = lines is not None and lines.stream == "stderr"
  before = len(lines.lines) if reading_stderr else 0
  os.killpg(process.pid, signum)
  try:
    if lines is not None:
      process.wait(timeout=60)
      lines.thread.join(timeout=60)
    if reading_stderr:
      stderr = "".join(line for line in lines.lines[before:]
                       if not line.startswith("["))
    elif lines is not None:
      stderr = process.stderr.read()
    else:
      _, stderr = process.communicate(timeout=60)
  finally:
    if process.poll() is None:
      os.killpg(process.pid, signal.SIGKILL)
      process.wait()
  return stderr


def _train_command(data_dir: str, workdir: str) -> list[str]:
  # A checkpoint every step: a signal in training most likely lands while
  # a save is in flight (orbax copies the state, then writes it in the
  # background). One epoch: the signalled runs get seconds into it, and
  # the rerun that completes it saves at each of its remaining steps.
  return [sys.executable, "-m", "launch.train",
          "--config=ctxtag/configs/smoke.py", f"--config.data_dir={data_dir}",
          "--config.audio.steps_per_epoch=160",
          "--config.audio.max_epochs=1",
          "--config.audio.checkpoint_every_steps=1",
          "--config.audio.checkpoint_every_seconds=0",
          f"--workdir={workdir}", "--model=audio"]


def _lines_after(process: subprocess.Popen, signum: int) -> list[str]:
  return [l for l in _signal_and_wait(process, signum).splitlines()
          if l.strip()]


def _committed_steps(workdir: str) -> list[int]:
  """The steps of the audio model's latest checkpoints, once every entry of
  latest/ and best/ is checked to be a committed step or orbax's temporary
  directory of a save cut short (which no restore takes for a step)."""
  for which in ("latest", "best"):
    directory = os.path.join(workdir, "audio", "checkpoints", which)
    entries = os.listdir(directory) if os.path.isdir(directory) else []
    assert all(entry.isdigit() or ".orbax-checkpoint-tmp" in entry
               for entry in entries), entries
  directory = os.path.join(workdir, "audio", "checkpoints", "latest")
  return sorted(int(entry) for entry in os.listdir(directory)
                if entry.isdigit()) if os.path.isdir(directory) else []


_RESUMED = re.compile(r"\[audio\] resuming (?:at step (\d+)|after epoch \d+"
                      r" \(step (\d+)\))")


def _assert_resumed_from_the_newest(lines: list[str], steps: list[int]):
  """That a run which found the committed `steps` resumed from the newest
  (if it got as far as saying so), without a damaged checkpoint."""
  assert not any("cannot be restored" in line for line in lines), lines
  resumed = [m for m in map(_RESUMED.search, lines) if m]
  if resumed:
    assert int(resumed[0][1] or resumed[0][2]) == steps[-1], (lines, steps)


def _interrupt(command: list[str], workdir: str, signum: int,
               anchor: str | tuple[str, ...] | None,
               delay: float) -> list[str]:
  """Runs `command`, signals it `delay` seconds after it printed `anchor`
  on stderr (None: after it started), and asserts that it ended in the one
  line and the signal's exit status, leaving only committed checkpoints;
  returns the lines it had printed on stderr before the signal."""
  steps = _committed_steps(workdir)
  process = _start(command)
  lines = _Lines(process, "stderr")
  if anchor is not None:
    lines.wait_for(anchor, process)
  time.sleep(delay)
  assert process.poll() is None, "".join(lines.lines)
  printed = list(lines.lines)
  stderr = _signal_and_wait(process, signum, lines)
  assert process.returncode == interrupts.EXIT_STATUS[signum], (
      anchor, delay, "".join(lines.lines))
  assert [l for l in stderr.splitlines() if l.strip()] == [LINE], (
      anchor, delay, "".join(lines.lines))
  _committed_steps(workdir)
  _assert_resumed_from_the_newest(lines.lines, steps)
  return printed


def _rerun_to_the_end(command: list[str], workdir: str) -> None:
  steps = _committed_steps(workdir)
  rerun = subprocess.run(command, cwd=REPO, capture_output=True, text=True,
                         timeout=600)
  assert rerun.returncode == 0, rerun.stderr
  assert "audio: best epoch" in rerun.stdout
  assert os.path.exists(os.path.join(workdir, "audio", "summary.json"))
  if steps:
    assert _RESUMED.search(rerun.stderr), rerun.stderr
  _assert_resumed_from_the_newest(rerun.stderr.splitlines(), steps)
  # The saves that signals cut short are gone.
  for which in ("latest", "best"):
    directory = os.path.join(workdir, "audio", "checkpoints", which)
    assert all(entry.isdigit() for entry in os.listdir(directory))


def test_sigterm_and_sigint_mid_training_end_in_one_line_and_resume(
    small_dataset_path, tmp_path):
  data_dir = os.path.dirname(os.path.dirname(os.path.dirname(
      small_dataset_path)))
  workdir = str(tmp_path / "run")
  command = _train_command(data_dir, workdir)
  # Each run resumes the one before and is stopped between 0.1 and 1.5 s
  # into its training, saves in flight or not.
  for signum, delay in ((signal.SIGTERM, 0.1), (signal.SIGINT, 0.5),
                        (signal.SIGTERM, 0.9), (signal.SIGINT, 1.5)):
    _interrupt(command, workdir, signum, "[audio] epoch", delay)
    assert not os.path.exists(os.path.join(workdir, "audio", "summary.json"))
  _rerun_to_the_end(command, workdir)


# Moments of a launcher's first seconds: during its imports and setup
# (after its start), and through its first compile (after it says it
# compiles, or that it resumes: a new process compiles again, for seconds
# on a CPU), into its first steps and saves.
_COMPILING = ("compiling the first steps", "[audio] resuming")
_FIRST_SECONDS = ([(None, 1.5), (None, 3.0)]
                  + [(_COMPILING, delay)
                     for delay in (0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.5, 5.0)])


@pytest.mark.slow
def test_signals_in_the_first_seconds_end_in_one_line_and_resume(
    small_dataset_path, tmp_path):
  data_dir = os.path.dirname(os.path.dirname(os.path.dirname(
      small_dataset_path)))
  workdir = str(tmp_path / "run")
  command = _train_command(data_dir, workdir)
  landed = collections.Counter()
  # Each moment gets one signal, SIGINT and SIGTERM in turn (one handler
  # serves both; each still lands in imports, compiles and steps): a start
  # of the launcher costs seconds of imports and compiling.
  signals = (signal.SIGINT, signal.SIGTERM)
  for i, (anchor, delay) in enumerate(_FIRST_SECONDS):
    signum = signals[i % 2]
    printed = _interrupt(command, workdir, signum, anchor, delay)
    stage = ("training" if any("[audio] epoch" in l for l in printed)
             else "compiling" if any(t in l for l in printed
                                     for t in _COMPILING)
             else "starting")
    landed[signum.name, anchor is not None, delay, stage] += 1
  # Where the signals landed, for a reader of `pytest -s`.
  print(sorted(landed.items()))
  assert sum(n for (_, _, _, stage), n in landed.items()
             if stage == "compiling") >= 4, landed
  _rerun_to_the_end(command, workdir)


# A main whose first jit compiles for seconds; the compile goes on in XLA's
# threads after the signal interrupts the main thread's wait for it.
_COMPILING_MAIN = textwrap.dedent("""\
    from ctxtag import interrupts
    interrupts.before_imports(__name__)
    import jax
    import jax.numpy as jnp
    from launch import cli
    def f(x):
      for i in range(400):
        x = jnp.sin(x @ x + i)
      return x
    def main(argv):
      print("compiling", flush=True)
      jax.jit(f)(jnp.ones((64, 64))).block_until_ready()
      print("compiled", flush=True)
    if __name__ == "__main__":
      cli.run(main)
""")


@pytest.mark.parametrize("signum,delay", [(signal.SIGINT, 0.2),
                                          (signal.SIGTERM, 1.0)])
def test_a_signal_during_a_compile_is_one_line_not_a_crash(signum, delay):
  # Before: the line, then "Fatal Python error: Segmentation fault" (jax's
  # teardown at exit destroyed the devices under the running compile).
  process = _start([sys.executable, "-c", _COMPILING_MAIN])
  lines = _Lines(process)
  lines.wait_for("compiling", process, seconds=120)
  time.sleep(delay)
  stderr = _signal_and_wait(process, signum, lines)
  assert "compiled\n" not in lines.lines  # it was compiling
  assert [l for l in stderr.splitlines() if l.strip()] == [LINE], stderr
  assert process.returncode == interrupts.EXIT_STATUS[signum]


# A main that is done, then exits slowly (as jax's runtime takes a second to
# tear down).
_SLOW_EXIT_MAIN = textwrap.dedent("""\
    import atexit, time
    from launch import cli
    def main(argv):
      atexit.register(time.sleep, 30)
      print("ready", flush=True)
    cli.run(main)
""")


def test_a_signal_after_main_is_the_line_too():
  # Before: a signal in the exit after main was an atexit traceback, or
  # (once Python's teardown had restored the default handlers) a silent
  # death by SIGINT.
  process = _start([sys.executable, "-c", _SLOW_EXIT_MAIN])
  lines = _Lines(process)
  lines.wait_for("ready", process, seconds=120)
  time.sleep(0.5)
  stderr = _signal_and_wait(process, signal.SIGINT, lines)
  assert process.returncode == 130, stderr
  assert stderr.splitlines()[-1] == LINE, stderr
  assert [l for l in stderr.splitlines() if l.strip()] == [LINE], stderr


# A main that spends its time in a garbage-collector callback, where Python
# drops a KeyboardInterrupt as "Exception ignored" (as jax's callback did in
# launch.evaluate, which then went on and exited 0).
_SWALLOWING_MAIN = textwrap.dedent("""\
    import gc, time
    from launch import cli
    def slow_callback(phase, info):
      time.sleep(0.1)
    def main(argv):
      gc.callbacks.append(slow_callback)
      print("ready", flush=True)
      while True:
        end = time.time() + 0.02
        while time.time() < end:
          pass
        gc.collect()
    cli.run(main)
""")

# A main thread stuck in native code, which never runs a Python handler.
_STUCK_MAIN = textwrap.dedent("""\
    import ctypes, signal
    from launch import cli
    def main(argv):
      signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
      print("ready", flush=True)
      ctypes.CDLL(None).sleep(120)
    cli.run(main)
""")


@pytest.mark.slow
@pytest.mark.parametrize("script,signum,status", [
    (_SWALLOWING_MAIN, signal.SIGINT, 130),
    (_STUCK_MAIN, signal.SIGTERM, 143),
])
def test_an_interruption_is_never_swallowed(script, signum, status):
  process = _start([sys.executable, "-c", script])
  lines = _Lines(process)
  lines.wait_for("ready", process, seconds=120)
  start = time.time()
  stderr = _signal_and_wait(process, signum)
  assert process.returncode == status, stderr
  assert [l for l in stderr.splitlines() if l.strip()] == [LINE]
  grace = interrupts.STUCK_GRACE_S
  assert time.time() - start < grace + 10


def test_evaluate_ends_interrupted_at_any_moment(smoke_run, tmp_path):
  workdir = str(tmp_path / "run")
  shutil.copytree(smoke_run, workdir)
  command = [sys.executable, "-m", "launch.evaluate", f"--workdir={workdir}",
             "--bootstrap_resamples=3000"]
  # Moments spread over the whole run, however fast this machine is.
  start = time.time()
  whole = subprocess.run(command, cwd=REPO, capture_output=True, text=True,
                         timeout=600)
  assert whole.returncode == 0, whole.stderr
  duration = time.time() - start
  for fraction in (0.1, 0.25, 0.4):  # room for a slower run on a loaded CPU
    process = _start(command)
    time.sleep(fraction * duration)
    assert process.poll() is None, f"ended before {fraction} of its run"
    stderr = _signal_and_wait(process, signal.SIGINT)
    assert process.returncode == 130, (fraction, stderr)
    assert [l for l in stderr.splitlines() if l.strip()] == [LINE], fraction


_POOL_MAIN = textwrap.dedent("""\
    import time
    from launch import cli
    from ctxtag.sources import mels
    def work(x):
      time.sleep(0.2)
      return x
    def main(argv):
      with mels.worker_pool(2) as pool:
        print("ready", flush=True)
        for _ in pool.imap(work, range(10_000)):
          pass
    cli.run(main)
""")


@pytest.mark.slow
@pytest.mark.parametrize("signum,status", [(signal.SIGINT, 130),
                                           (signal.SIGTERM, 143)])
def test_worker_pools_leave_the_interruption_to_the_launcher(signum, status):
  process = _start([sys.executable, "-c", _POOL_MAIN])
  lines = _Lines(process)
  lines.wait_for("ready", process, seconds=120)
  time.sleep(1.0)
  stderr = _signal_and_wait(process, signum)
  assert process.returncode == status, stderr
  assert [l for l in stderr.splitlines() if l.strip()] == [LINE]


# A spawned worker imports the launcher's module (as __mp_main__): from its
# first line the terminal's Ctrl-C is the launcher's, not a traceback of its
# own, even while it still imports.
_SPAWNING_LAUNCHER = textwrap.dedent("""\
    from ctxtag import interrupts
    interrupts.before_imports(__name__)
    import multiprocessing, time
    from launch import cli
    def work(x):
      time.sleep(0.2)
      return x
    def main(argv):
      with multiprocessing.get_context("spawn").Pool(2) as pool:
        print("ready", flush=True)
        for _ in pool.imap(work, range(10_000)):
          pass
    if __name__ == "__main__":
      cli.run(main)
""")


@pytest.mark.slow
@pytest.mark.parametrize("signum,status", [(signal.SIGINT, 130),
                                           (signal.SIGTERM, 143)])
def test_spawned_workers_leave_the_interruption_to_the_launcher(
    tmp_path, signum, status):
  script = tmp_path / "launcher.py"
  script.write_text(_SPAWNING_LAUNCHER)
  process = _start([sys.executable, str(script)])
  _Lines(process).wait_for("ready", process, seconds=120)
  time.sleep(1.0)  # the workers are importing, or working
  assert process.poll() is None
  assert _lines_after(process, signum) == [LINE]
  assert process.returncode == status


_IMPORTING = textwrap.dedent("""\
    from ctxtag import interrupts
    interrupts.before_imports(__name__)
    import time
    print("importing", flush=True)
    time.sleep(60)  # as jax, TFDS and scipy take seconds
""")


@pytest.mark.slow
@pytest.mark.parametrize("signum,status", [(signal.SIGINT, 130),
                                           (signal.SIGTERM, 143)])
def test_a_signal_during_imports_is_one_line(signum, status):
  process = _start([sys.executable, "-c", _IMPORTING])
  _Lines(process).wait_for("importing", process, seconds=60)
  start = time.time()
  assert _lines_after(process, signum) == [LINE]
  assert process.returncode == status
  assert time.time() - start < 5  # at once: nothing to clean up yet


@pytest.mark.slow
def test_ctrl_c_during_a_launchers_imports_is_one_line():
  process = _start([sys.executable, "-m", "launch.evaluate",
                    "--workdir=/nonexistent"])
  time.sleep(1.0)  # its imports (jax, TFDS) take seconds
  assert process.poll() is None
  assert _lines_after(process, signal.SIGINT) == [LINE]
  assert process.returncode == 130


# Cleanup that hangs after the interruption: a second signal, or the unwind
# grace, ends it.
_HANGING_CLEANUP = textwrap.dedent("""\
    import sys, time
    from ctxtag import interrupts
    handling = interrupts.install(unwind_grace_s=float(sys.argv[1]))
    try:
      try:
        print("ready", flush=True)
        time.sleep(60)
      finally:
        print("cleaning up", flush=True)
        time.sleep(60)
    except interrupts.INTERRUPTIONS as error:
      handling.end(error)
""")


@pytest.mark.slow
def test_a_second_signal_ends_at_once():
  process = _start([sys.executable, "-c", _HANGING_CLEANUP, "60"])
  lines = _Lines(process)
  lines.wait_for("ready", process, seconds=60)
  os.killpg(process.pid, signal.SIGINT)
  lines.wait_for("cleaning up", process, seconds=10)
  start = time.time()
  assert _lines_after(process, signal.SIGTERM) == [LINE]
  assert process.returncode == 130  # the first signal's status
  assert time.time() - start < 5


@pytest.mark.slow
def test_cleanup_that_hangs_ends_after_the_unwind_grace():
  process = _start([sys.executable, "-c", _HANGING_CLEANUP, "2"])
  _Lines(process).wait_for("ready", process, seconds=60)
  start = time.time()
  assert _lines_after(process, signal.SIGTERM) == [LINE]
  assert process.returncode == 143
  assert 2 <= time.time() - start < 10


# In this process, without installing anything.


@pytest.mark.parametrize("error,first,status", [
    (KeyboardInterrupt(), None, 130),
    (interrupts.Terminated(), None, 143),
    # Unwinding raised another one; the first signal decides.
    (KeyboardInterrupt(), signal.SIGTERM, 143),
])
def test_end_prints_one_line_and_exits_with_the_first_signals_status(
    capsys, error, first, status):
  handling = interrupts.Interrupts()
  handling.signum = first
  with pytest.raises(SystemExit) as exit_:
    handling.end(error)
  assert exit_.value.code == status
  assert capsys.readouterr().err == LINE + "\n"
  assert handling.seen.is_set()  # the watcher no longer ends the process


def test_an_interruption_that_was_swallowed_is_raised_again():
  handling = interrupts.Interrupts()
  handling.raise_if_interrupted()  # none yet: nothing happens
  handling.signum = signal.SIGTERM
  with pytest.raises(interrupts.Terminated):
    handling.raise_if_interrupted()
  handling.signum = signal.SIGINT
  with pytest.raises(KeyboardInterrupt):
    handling.raise_if_interrupted()


@pytest.fixture
def signal_state():
  """This process's SIGINT and SIGTERM handlers and wakeup fd, restored
  after the test."""
  handlers = {s: signal.getsignal(s) for s in interrupts.EXIT_STATUS}
  wakeup_fd = signal.set_wakeup_fd(-1)
  signal.set_wakeup_fd(wakeup_fd)
  yield handlers
  for signum, handler in handlers.items():
    signal.signal(signum, handler)
  signal.set_wakeup_fd(wakeup_fd)


def test_before_imports_changes_nothing_outside_a_program(signal_state):
  interrupts.before_imports("launch.train")  # imported by a test, a script
  assert {s: signal.getsignal(s)
          for s in interrupts.EXIT_STATUS} == signal_state


def test_a_spawned_worker_ignores_ctrl_c_and_ends_on_sigterm(signal_state):
  del signal_state
  interrupts.before_imports("__mp_main__")
  assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
  assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
  assert signal.set_wakeup_fd(-1) == -1


def test_an_interruption_in_a_deferred_block_is_raised_at_its_end():
  # pylint: disable=protected-access
  handling = interrupts.Interrupts()
  done = []
  with pytest.raises(KeyboardInterrupt):
    with handling.deferred():
      with handling.deferred():  # nested: held to the outermost block's end
        handling._on_signal(signal.SIGINT, None)  # as the signal would
        done.append("inner")
      done.append("outer")
  assert done == ["inner", "outer"]
  assert handling.seen.is_set()  # the watcher waits the unwind grace
  with handling.deferred():  # nothing held any more
    pass


def test_deferred_holds_nothing_without_install():
  with interrupts.deferred():
    pass
  assert interrupts._installed is None  # pylint: disable=protected-access
