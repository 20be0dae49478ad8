"""Tests of ctxtag.locks: one run per workdir, one build per dataset.

Locks guard against other processes, so the tests that matter hold a lock
in a real subprocess and start real launchers against it.
"""

import os
import signal
import subprocess
import sys
import time

import pytest

from ctxtag import distributed
from ctxtag import locks
from tfds_builders import contextual_tags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = os.path.join(REPO, "ctxtag", "configs", "smoke.py")
VERSION = str(contextual_tags.Builder.VERSION)

# Holds the lock argv[2] of directory argv[1] (argv[3]: "shared" or not);
# with argv[4] == "fork", forks a child that outlives it (as a worker pool's
# would) first.
_HOLDER = """
import os, sys, time
from ctxtag import locks
with locks.held(sys.argv[1], sys.argv[2], "the test's rule",
                shared=sys.argv[3] == "shared"):
  if sys.argv[4] == "fork":
    ready_r, ready_w = os.pipe()
    if os.fork() == 0:
      os.write(ready_w, b"x")  # past the fork hooks: its copy is closed
      time.sleep(60)
      os._exit(0)
    os.read(ready_r, 1)  # "held" only once the child is what it will be
  print("held", flush=True)
  time.sleep(120)
"""


class Holder:
  """A subprocess holding a lock until it is stopped."""

  def __init__(self, directory: str, name: str = locks.RUN_LOCK,
               shared: bool = False, fork: bool = False):
    self.process = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, directory, name,
         "shared" if shared else "exclusive", "fork" if fork else "-"],
        stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert self.process.stdout.readline().strip() == "held"
    self.pid = self.process.pid

  def kill(self) -> None:
    if self.process.poll() is None:
      self.process.send_signal(signal.SIGKILL)
    self.process.wait(timeout=30)


@pytest.fixture
def holders():
  started = []
  yield lambda *args, **kwargs: started.append(Holder(*args, **kwargs)) or (
      started[-1])
  for holder in started:
    holder.kill()


def _launch(module: str, *flags: str, cwd: str = REPO,
            timeout: float = 120) -> tuple[subprocess.CompletedProcess, float]:
  start = time.time()
  process = subprocess.run([sys.executable, "-m", module, *flags],
                           capture_output=True, text=True, cwd=cwd,
                           timeout=timeout)
  return process, time.time() - start


def _error_lines(process) -> list[str]:
  return [line for line in process.stderr.splitlines()
          if line.startswith("error:")]


# In one process.


def test_a_lock_is_reentrant_and_leaves_nothing_behind(tmp_path):
  workdir = str(tmp_path / "new" / "run")
  with locks.held(workdir, locks.RUN_LOCK, locks.RUN_RULE) as path:
    assert open(path).read().splitlines()[0] == str(os.getpid())
    with locks.held(workdir):  # the same process: shared, no error
      locks.keep(workdir)  # held already: keeps nothing more
    assert locks.holds(workdir)
  assert not locks.holds(workdir)
  assert not os.path.exists(tmp_path / "new")  # made for the lock, removed


def test_keep_holds_the_lock_until_released(tmp_path):
  workdir = str(tmp_path / "run")
  os.makedirs(workdir)
  locks.keep(workdir)
  locks.keep(workdir)
  assert locks.holds(workdir)
  assert os.path.exists(os.path.join(workdir, locks.RUN_LOCK))
  locks.release_kept(workdir)
  assert not locks.holds(workdir)
  assert os.listdir(workdir) == []


def test_only_process_zero_of_a_run_on_several_locks(tmp_path, monkeypatch):
  monkeypatch.setattr(distributed, "is_main", lambda: False)
  with locks.run_lock(str(tmp_path / "run")) as path:
    assert path is None
  assert not os.path.exists(tmp_path / "run")


# Across processes.


@pytest.mark.slow
def test_another_process_is_refused_naming_the_dir_and_the_holder(
    tmp_path, holders):
  holder = holders(str(tmp_path))
  with pytest.raises(locks.BusyError) as error:
    with locks.held(str(tmp_path), locks.RUN_LOCK, locks.RUN_RULE):
      pass
  message = str(error.value)
  assert message.startswith(f"{tmp_path} is in use by process {holder.pid}"
                            " (python")
  assert "one run at a time per workdir" in message
  assert "\n" not in message


@pytest.mark.slow
def test_readers_share_a_lock_that_a_builder_needs_alone(tmp_path, holders):
  holders(str(tmp_path), locks.BUILD_LOCK, shared=True)
  with locks.held(str(tmp_path), locks.BUILD_LOCK, shared=True):
    pass  # a second reader
  with pytest.raises(locks.BusyError):
    with locks.held(str(tmp_path), locks.BUILD_LOCK):
      pass


@pytest.mark.slow
@pytest.mark.parametrize("fork", [False, True])
def test_a_killed_holder_never_blocks(tmp_path, holders, fork):
  """With `fork`, the holder's child (a worker) outlives it: the lock still
  dies with the holder."""
  holder = holders(str(tmp_path), fork=fork)
  holder.kill()
  assert os.path.exists(tmp_path / locks.RUN_LOCK)  # left behind, unlocked
  with locks.held(str(tmp_path), locks.RUN_LOCK) as path:
    assert open(path).read().splitlines()[0] == str(os.getpid())


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["train", "reproduce"])
def test_a_second_run_on_a_workdir_ends_at_once(tmp_path, holders, launcher):
  workdir = str(tmp_path / "run")
  holder = holders(workdir)
  process, seconds = _launch(
      f"launch.{launcher}", f"--workdir={workdir}", f"--config={SMOKE}",
      *(["--model=audio"] if launcher == "train" else []))
  assert process.returncode == 1, process.stderr
  lines = _error_lines(process)
  assert len(lines) == 1, process.stderr
  assert lines[0].startswith(
      f"error: {workdir} is in use by process {holder.pid} (python")
  assert "one run at a time per workdir" in lines[0]
  assert os.listdir(workdir) == [locks.RUN_LOCK]  # nothing written
  assert seconds < 60  # no dataset built, no model trained


@pytest.mark.slow
def test_evaluate_of_a_workdir_in_use_ends_at_once(tmp_path, holders):
  workdir = tmp_path / "run"
  workdir.mkdir()
  (workdir / "dataset_path.txt").write_text("/no/such/dataset")
  holder = holders(str(workdir))
  process, _ = _launch("launch.evaluate", f"--workdir={workdir}")
  assert process.returncode == 1
  assert _error_lines(process) == [_error_lines(process)[0]]
  assert _error_lines(process)[0].startswith(
      f"error: {workdir} is in use by process {holder.pid}")


@pytest.mark.slow
def test_a_second_build_of_a_dataset_ends_at_once_and_deletes_nothing(
    tmp_path, holders):
  data_dir = tmp_path / "data"
  parent = data_dir / "contextual_tags" / "simulated_small"
  live = parent / f"incomplete.abc123_{VERSION}"  # the first build's
  live.mkdir(parents=True)
  holder = holders(str(parent), locks.BUILD_LOCK)
  process, _ = _launch("launch.build_dataset",
                       "--dataset=contextual_tags/simulated_small",
                       f"--data_dir={data_dir}")
  assert process.returncode == 1
  lines = _error_lines(process)
  assert len(lines) == 1, process.stderr
  assert lines[0].startswith(f"error: {parent} is in use by process"
                             f" {holder.pid} (python")
  assert "one build at a time per dataset directory" in lines[0]
  assert live.is_dir()  # a stale-looking live build is left alone
  # Its holder killed, the next build runs, and clears what it left.
  holder.kill()
  process, _ = _launch("launch.build_dataset",
                       "--dataset=contextual_tags/simulated_small",
                       f"--data_dir={data_dir}", timeout=300)
  assert process.returncode == 0, process.stderr
  assert f"removing {live}, left by an interrupted build" in process.stderr
  assert sorted(os.listdir(parent)) == [VERSION]


@pytest.mark.slow
def test_a_run_holding_its_workdir_builds_its_dataset_and_blocks_a_second(
    tmp_path):
  """Two real runs: the first holds its workdir (and builds into
  <workdir>/data); the second ends at once naming it; killed, the first
  blocks nothing."""
  workdir = str(tmp_path / "run")
  first = subprocess.Popen(  # long epochs: it must outlive the second run
      [sys.executable, "-m", "launch.train", f"--workdir={workdir}",
       f"--config={SMOKE}", "--model=audio",
       "--config.audio.steps_per_epoch=100000"],
      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=REPO,
      start_new_session=True)
  try:
    lock = os.path.join(workdir, locks.RUN_LOCK)
    deadline = time.time() + 120
    while time.time() < deadline and first.poll() is None:
      if os.path.exists(lock) and open(lock).read().startswith(
          f"{first.pid}\n"):
        break
      time.sleep(0.05)
    assert first.poll() is None, first.stderr.read()
    second, seconds = _launch("launch.reproduce", f"--workdir={workdir}",
                              f"--config={SMOKE}")
    assert second.returncode == 1
    assert _error_lines(second)[0].startswith(
        f"error: {workdir} is in use by process {first.pid} (python -m"
        " launch.train")
    assert seconds < 60
  finally:
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=30)
  with locks.held(workdir, locks.RUN_LOCK):
    pass
