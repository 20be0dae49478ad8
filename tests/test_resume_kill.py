"""Resuming after anything: a SIGKILL mid-epoch, a damaged checkpoint, a kill
between the best and the latest checkpoint, a full disk. Each rerun ends
byte-identical to a run that was never stopped."""

import errno
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from orbax.checkpoint._src.handlers import json_checkpoint_handler

from ctxtag import files
from ctxtag import input_pipeline
from ctxtag import loop as loop_lib
from ctxtag import models
from ctxtag import steps as steps_lib
from ctxtag import train
from ctxtag import transfer
from ctxtag.configs import smoke

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The SIGKILL test's run: the audio model (one step per dispatch on CPU),
# epochs of 80 steps, a checkpoint every 20: the kill must land before the
# second epoch ends, 60 steps after the first checkpoint within it, however
# slowly a loaded machine lets the test poll.
KILLED_EPOCH = 80
KILLED_OVERRIDES = {"steps_per_epoch": KILLED_EPOCH, "max_epochs": 2,
                    "patience": 5, "checkpoint_every_steps": 20,
                    "checkpoint_every_seconds": 0.0}


def _train_command(data_dir, workdir):
  overrides = [f"--config.audio.{key}={value}"
               for key, value in KILLED_OVERRIDES.items()]
  return [sys.executable, "-m", "launch.train",
          f"--config={REPO}/launch/configs/smoke.py",
          f"--config.data_dir={data_dir}", *overrides,
          f"--workdir={workdir}", "--model=audio"]


def _latest_steps(workdir, name):
  """The committed steps in `name`'s latest/ (orbax renames a finished
  save to its step number)."""
  directory = os.path.join(workdir, name, "checkpoints", "latest")
  if not os.path.isdir(directory):
    return []
  return sorted(int(entry) for entry in os.listdir(directory)
                if entry.isdigit())


def _best_state(name, config, dataset_path, workdir, sharding=None):
  frames = input_pipeline.load_split(dataset_path, "train").mel_shape[0]
  return transfer.restore_best(name, config, workdir, frames, sharding)


def _predictions(name, config, dataset_path, workdir):
  steps = steps_lib.model_steps(
      name, input_pipeline.load_split(dataset_path, "train"))
  state = _best_state(name, config, dataset_path, workdir, steps.replicated)
  test = input_pipeline.load_split(dataset_path, "test")
  return steps_lib.predict(steps, state, test, models.BATCH_KINDS[name],
                           config.eval_batch_size)


def _read(path):
  with open(path, "rb") as f:
    return f.read()


def _assert_same_run(name, config, dataset_path, whole, resumed):
  """Byte-identical summaries, metric logs, best states and predictions."""
  for file_name in ("summary.json", "metrics.jsonl"):
    assert _read(os.path.join(resumed, name, file_name)) == _read(
        os.path.join(whole, name, file_name)), file_name
  best = [jax.tree.leaves(jax.device_get(_best_state(
      name, config, dataset_path, workdir))) for workdir in (whole, resumed)]
  for a, b in zip(*best):
    assert np.asarray(a).tobytes() == np.asarray(b).tobytes()
  assert _predictions(name, config, dataset_path, resumed).tobytes() == (
      _predictions(name, config, dataset_path, whole).tobytes())


@pytest.mark.slow
def test_sigkill_mid_epoch_resumes_to_byte_identical_results(
    small_dataset_path, tmp_path):
  data_dir = os.path.dirname(os.path.dirname(os.path.dirname(
      small_dataset_path)))
  whole, killed = str(tmp_path / "whole"), str(tmp_path / "killed")
  uninterrupted = subprocess.Popen(
      _train_command(data_dir, whole), cwd=REPO, stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT, text=True)
  victim = subprocess.Popen(
      _train_command(data_dir, killed), cwd=REPO, stdout=subprocess.DEVNULL,
      stderr=subprocess.DEVNULL)
  # Kill as soon as a checkpoint inside the second epoch is committed: the
  # kill then lands mid-epoch, possibly during the next (background) save.
  deadline = time.time() + 300
  while victim.poll() is None and time.time() < deadline:
    if any(KILLED_EPOCH < step < 2 * KILLED_EPOCH
           for step in _latest_steps(killed, "audio")):
      os.kill(victim.pid, signal.SIGKILL)
      break
    time.sleep(0.005)
  assert victim.wait(timeout=60) == -signal.SIGKILL, (
      f"not killed: {_latest_steps(killed, 'audio')}")
  assert not os.path.exists(os.path.join(killed, "audio", "summary.json"))
  # A save the kill cut short is only orbax's temporary directory, renamed
  # to its step once complete: the rerun must resume from the newest step.
  committed = _latest_steps(killed, "audio")
  latest_dir = os.path.join(killed, "audio", "checkpoints", "latest")
  assert all(entry.isdigit() or ".orbax-checkpoint-tmp" in entry
             for entry in os.listdir(latest_dir)), os.listdir(latest_dir)
  assert uninterrupted.wait(timeout=300) == 0, uninterrupted.stdout.read()

  rerun = subprocess.run(_train_command(data_dir, killed), cwd=REPO,
                         capture_output=True, text=True, timeout=300)
  assert rerun.returncode == 0, rerun.stderr
  resumed_line = next(line for line in rerun.stderr.splitlines()
                      if "resuming" in line)
  done = int(resumed_line.split(", ")[1].split(" of ")[0])
  assert 0 < done < KILLED_EPOCH, resumed_line  # mid-epoch 2, not a boundary
  assert f"resuming at step {committed[-1]}:" in resumed_line
  assert f"epoch 2, {done} of its {KILLED_EPOCH} steps done" in resumed_line

  config = smoke.get_config()
  config.audio.update(KILLED_OVERRIDES)
  _assert_same_run("audio", config, small_dataset_path, whole, killed)
  steps = [json.loads(line)["step"] for line in open(
      os.path.join(killed, "audio", "metrics.jsonl"))]
  assert steps == sorted(steps)  # no record twice


# In-process runs of the user-only model: scans of 4 steps per dispatch.
def _user_config():
  config = smoke.get_config()
  config.user.update(max_epochs=2, patience=10, steps_per_dispatch=4,
                     checkpoint_every_steps=8, checkpoint_every_seconds=0.0)
  return config


@pytest.fixture(scope="module")
def whole_user_run(small_dataset_path, tmp_path_factory):
  """An uninterrupted user-only run with checkpoints within epochs."""
  workdir = str(tmp_path_factory.mktemp("whole_user"))
  summary = train.train_and_evaluate("user", _user_config(),
                                     small_dataset_path, workdir)
  return workdir, summary


class Stop(Exception):
  """Stands for a kill, raised where a test wants the run to end."""


@pytest.mark.slow
def test_run_stopped_after_a_checkpoint_within_an_epoch_resumes_there(
    small_dataset_path, whole_user_run, tmp_path, monkeypatch, capsys):
  whole, summary = whole_user_run
  per_epoch = summary["steps_per_epoch"]
  save = loop_lib.EpochRunner.save_within_epoch
  saved = []

  def save_then_stop(self, state, step, losses):
    save(self, state, step, losses)
    saved.append(step)
    if step > per_epoch:  # a checkpoint inside the second epoch
      raise Stop

  monkeypatch.setattr(loop_lib.EpochRunner, "save_within_epoch",
                      save_then_stop)
  workdir = str(tmp_path)
  with pytest.raises(Stop):
    train.train_and_evaluate("user", _user_config(), small_dataset_path,
                             workdir)
  monkeypatch.undo()
  stopped_at = saved[-1]
  # Inside the second epoch, at a dispatch boundary (4 steps a dispatch).
  assert per_epoch < stopped_at < 2 * per_epoch
  assert (stopped_at - per_epoch) % 4 == 0
  train.train_and_evaluate("user", _user_config(), small_dataset_path,
                           workdir)
  done = stopped_at - per_epoch
  assert (f"[user] resuming at step {stopped_at}: epoch 2, {done} of its"
          f" {per_epoch} steps done") in capsys.readouterr().err
  _assert_same_run("user", _user_config(), small_dataset_path, whole,
                   workdir)


def _state_files(step_dir):
  return sorted(glob.glob(os.path.join(step_dir, "state", "d", "*")))


def _truncate_data(step_dir):
  for path in _state_files(step_dir):
    os.truncate(path, os.path.getsize(path) // 2)


def _delete_manifest(step_dir):
  os.remove(os.path.join(step_dir, "state", "manifest.ocdbt"))


def _truncate_meta(step_dir):
  os.truncate(os.path.join(step_dir, "meta", "metadata"), 5)


@pytest.mark.slow
@pytest.mark.parametrize("damage", [_truncate_data, _delete_manifest])
def test_damaged_newest_checkpoint_falls_back_to_the_one_before(
    small_dataset_path, whole_user_run, tmp_path, capsys, damage):
  whole, _ = whole_user_run
  workdir = str(tmp_path / "run")
  shutil.copytree(whole, workdir)
  os.remove(os.path.join(workdir, "user", "summary.json"))
  newest, before = _latest_steps(workdir, "user")[::-1]
  latest_dir = os.path.join(workdir, "user", "checkpoints", "latest")
  damage(os.path.join(latest_dir, str(newest)))

  train.train_and_evaluate("user", _user_config(), small_dataset_path,
                           workdir)
  lines = [line for line in capsys.readouterr().err.splitlines()
           if "cannot be restored" in line]
  assert len(lines) == 1
  assert lines[0].startswith(
      f"[user] checkpoint {latest_dir}/{newest} cannot be restored (")
  assert lines[0].endswith(f"); falling back to step {before}")
  _assert_same_run("user", _user_config(), small_dataset_path, whole,
                   workdir)


@pytest.mark.slow
def test_damaged_best_checkpoint_falls_back_and_says_so(
    small_dataset_path, whole_user_run, tmp_path, capsys):
  whole, _ = whole_user_run
  workdir = str(tmp_path / "run")
  shutil.copytree(whole, workdir)
  best_dir = os.path.join(workdir, "user", "checkpoints", "best")
  newest, before = sorted(int(entry) for entry in os.listdir(best_dir)
                          if entry.isdigit())[::-1]
  _truncate_meta(os.path.join(best_dir, str(newest)))
  state = _best_state("user", _user_config(), small_dataset_path, workdir)
  assert int(state.step) == before
  assert (f"[user] checkpoint {best_dir}/{newest} cannot be restored"
          in capsys.readouterr().err)


@pytest.mark.slow
def test_every_checkpoint_damaged_trains_again_from_the_start(
    small_dataset_path, whole_user_run, tmp_path, capsys):
  whole, _ = whole_user_run
  workdir = str(tmp_path / "run")
  shutil.copytree(whole, workdir)
  os.remove(os.path.join(workdir, "user", "summary.json"))
  for step in _latest_steps(workdir, "user"):
    _delete_manifest(os.path.join(workdir, "user", "checkpoints", "latest",
                                  str(step)))
  train.train_and_evaluate("user", _user_config(), small_dataset_path,
                           workdir)
  assert "no earlier checkpoint left" in capsys.readouterr().err
  _assert_same_run("user", _user_config(), small_dataset_path, whole,
                   workdir)


def _stop_between_best_and_latest(workdir, summary):
  """The disk as a kill leaves it just after `best/<step>` is committed and
  before `latest/<step>` is: the last epoch's latest checkpoint gone."""
  last = summary["history"][-1]["step"]
  assert summary["best_step"] == last  # the last epoch improved
  os.remove(os.path.join(workdir, "user", "summary.json"))
  shutil.rmtree(os.path.join(workdir, "user", "checkpoints", "latest",
                             str(last)))
  assert last not in _latest_steps(workdir, "user")


@pytest.mark.slow
def test_kill_between_best_and_latest_checkpoints_resumes(
    small_dataset_path, whole_user_run, tmp_path):
  # Before: every rerun retrained the last epoch and died with orbax's
  # StepAlreadyExistsError on best/<step>.
  whole, summary = whole_user_run
  workdir = str(tmp_path / "run")
  shutil.copytree(whole, workdir)
  _stop_between_best_and_latest(workdir, summary)
  for _ in range(2):  # and a rerun of the rerun reuses it
    assert train.train_and_evaluate("user", _user_config(),
                                    small_dataset_path, workdir) == summary
  _assert_same_run("user", _user_config(), small_dataset_path, whole,
                   workdir)


@pytest.mark.slow
def test_full_disk_while_checkpointing_names_the_directory_and_resumes(
    small_dataset_path, whole_user_run, tmp_path, monkeypatch):
  whole, summary = whole_user_run
  last = summary["history"][-1]["step"]
  save_fn = json_checkpoint_handler.JsonCheckpointHandler._save_fn

  async def full_disk(self, item, directory):
    # The latest checkpoint of the last epoch: its best one is written.
    if f"/latest/{last}." in str(directory):
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return await save_fn(self, item, directory)

  monkeypatch.setattr(json_checkpoint_handler.JsonCheckpointHandler,
                      "_save_fn", full_disk)
  workdir = str(tmp_path)
  latest_dir = os.path.join(workdir, "user", "checkpoints", "latest")
  with pytest.raises(files.WriteError) as raised:
    train.train_and_evaluate("user", _user_config(), small_dataset_path,
                             workdir)
  assert str(raised.value).startswith(
      f"{latest_dir}: cannot write a checkpoint (No space left on device);")
  assert last not in _latest_steps(workdir, "user")
  assert not os.path.exists(os.path.join(workdir, "user", "summary.json"))
  monkeypatch.undo()

  assert train.train_and_evaluate("user", _user_config(), small_dataset_path,
                                  workdir) == summary
  _assert_same_run("user", _user_config(), small_dataset_path, whole,
                   workdir)
  assert not [entry for entry in os.listdir(latest_dir)
              if not entry.isdigit()]  # the failed save's leftovers went


def test_checkpoint_clock_counts_steps_and_seconds(monkeypatch):
  now = [100.0]
  monkeypatch.setattr(time, "monotonic", lambda: now[0])
  clock = loop_lib.CheckpointClock(8, 0.0, 4)
  assert [step for step in range(5, 30, 3) if clock.due(step)] == [
      8, 11, 14, 17, 20, 23, 26, 29]  # all past 8, none saved yet
  clock.restart(11)  # a checkpoint at 11
  assert [step for step in range(12, 30) if clock.due(step)] == list(
      range(16, 30))
  timed = loop_lib.CheckpointClock(0, 60.0, 0)
  assert not timed.due(1000)
  now[0] += 60.0
  assert timed.due(1001)
  timed.restart(1001)
  assert not timed.due(1002)
  off = loop_lib.CheckpointClock(0, 0.0, 0)
  now[0] += 1e6
  assert not off.due(10**6)
