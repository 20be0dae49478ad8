"""Sweeps off one machine (ctxtag.sweep.runs, launch.sweep --shard and
--collect): shards partition the grid, their collected outputs are the
one-process sweep's, a point in use elsewhere is left to its holder, and a
missing point is named."""

import json
import os
import subprocess
import sys

import pytest

from ctxtag import errors
from ctxtag import run
from ctxtag import sweep
from ctxtag.configs import smoke
from tests import test_locks
from tests import test_sweep_grid

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = os.path.join(REPO, "ctxtag", "configs", "smoke.py")
_VARY = ["seed=0,1,2", "audio_user.fusion=late,concat"]  # 6 points


def _launch(*args, timeout=600):
  return subprocess.run([sys.executable, "-m", "launch.sweep", *args],
                        capture_output=True, text=True, cwd=REPO,
                        timeout=timeout)


def _load(path):
  with open(path) as f:
    return json.load(f)


@pytest.mark.parametrize("text,shard", [("1/1", (1, 1)), ("3/4", (3, 4)),
                                        (" 2 / 7 ", (2, 7))])
def test_parse_shard(text, shard):
  parsed = sweep.parse_shard(text)
  assert (parsed.number, parsed.count) == shard


@pytest.mark.parametrize("text,message", [
    ("0/4", r"K must lie in 1\.\.4: shards count from 1, .*; got 0/4"),
    ("5/4", r"K must lie in 1\.\.4"), ("1/0", "N, the number of shards"),
    ("2", "expected K/N"), ("a/b", "expected K/N"), ("-1/4", "expected K/N"),
    ("1.5/4", "expected K/N"), ("", "expected K/N"), ("1/4/2", "expected K/N"),
])
def test_bad_shards_are_refused_in_one_line(text, message):
  with pytest.raises(errors.ConfigError, match=message) as caught:
    sweep.parse_shard(text)
  assert "\n" not in str(caught.value)


@pytest.mark.parametrize("count", [1, 2, 3, 4, 6, 7])
def test_shards_partition_the_points_round_robin(count):
  points = list(range(6))
  shares = [sweep.Shard(k, count).take(points) for k in range(1, count + 1)]
  assert sorted(sum(shares, [])) == points  # each point in exactly one
  for k, share in enumerate(shares):
    assert share == [p for p in points if p % count == k]


def test_shards_then_collect_give_the_one_process_sweep(tmp_path,
                                                        monkeypatch):
  stub, lines = test_sweep_grid._Stub(), []  # pylint: disable=protected-access
  monkeypatch.setattr(run, "reproduce", stub)
  config = smoke.get_config()
  axes = sweep.make_axes(config, _VARY)
  whole = sweep.run(config, str(tmp_path / "whole"), axes, log=lines.append)
  workdir = str(tmp_path / "sharded")
  outcomes = [sweep.run_points(config, workdir, axes, log=lines.append,
                               shard=sweep.Shard(k, 4)) for k in (1, 2, 3, 4)]
  assert [len(o[sweep.runs.RAN]) for o in outcomes] == [2, 2, 1, 1]
  assert not os.path.exists(os.path.join(workdir, "sweep.json"))
  assert "sweep: shard 3/4: 1 of 6 points; ran 1, finished earlier 0, in use"\
         " elsewhere 0" in lines
  assert sweep.collect(config, workdir, axes) == whole
  assert _load(os.path.join(workdir, "sweep.json")) == _load(
      tmp_path / "whole" / "sweep.json")
  for name in ("sweep.md", "sweep.png"):
    assert (tmp_path / "sharded" / name).read_bytes() == (
        tmp_path / "whole" / name).read_bytes()
  assert len(stub.runs) == 12  # each point once per sweep
  again = sweep.run_points(config, workdir, axes, shard=sweep.Shard(1, 4),
                           log=lines.append)
  assert again[sweep.runs.REUSED] == [
      "seed_0/fusion_late", "seed_2/fusion_late"]  # points 1 and 5 of 6
  assert len(stub.runs) == 12


def test_collect_names_the_missing_points_and_writes_nothing(tmp_path,
                                                            monkeypatch):
  monkeypatch.setattr(run, "reproduce", test_sweep_grid._Stub())  # pylint: disable=protected-access
  config = smoke.get_config()
  axes = sweep.make_axes(config, _VARY)
  sweep.run_points(config, str(tmp_path), axes, shard=sweep.Shard(2, 3),
                   log=lambda line: None)
  with pytest.raises(sweep.MissingPointsError) as caught:
    sweep.collect(config, str(tmp_path), axes)
  assert str(caught.value) == (
      f"{tmp_path}: 4 of 6 points of the sweep are not finished:"
      " seed_0/fusion_late, seed_1/fusion_late, seed_1/fusion_concat,"
      " seed_2/fusion_concat; run them (their shards, or the sweep without"
      " --shard), then collect again")
  assert not any(name.startswith("sweep.") for name in os.listdir(tmp_path))


def test_many_missing_points_are_counted_beyond_the_first_ten(tmp_path):
  config = smoke.get_config()
  axes = sweep.make_axes(config, ["seed=" + ",".join(map(str, range(12)))])
  with pytest.raises(sweep.MissingPointsError,
                     match=r": 12 of 12 points of the sweep are not finished:"
                     r" seed_0, seed_1, .*, seed_9 and 2 more; run them"):
    sweep.collect(config, str(tmp_path), axes)


def test_a_point_in_use_elsewhere_is_skipped_not_run_twice(tmp_path,
                                                           monkeypatch):
  stub, lines = test_sweep_grid._Stub(), []  # pylint: disable=protected-access
  monkeypatch.setattr(run, "reproduce", stub)
  config = smoke.get_config()
  axes = sweep.make_axes(config, ["seed=0,1"])
  holder = test_locks.Holder(str(tmp_path / "seed_1"))
  try:
    with pytest.raises(sweep.MissingPointsError,
                       match=r"1 of 2 points of the sweep are not finished:"
                       r" seed_1;"):
      sweep.run(config, str(tmp_path), axes, log=lines.append)
    assert [os.path.basename(p) for p in stub.runs] == ["seed_0"]
    assert any(line.startswith("sweep: seed 1 (2 of 2): ")
               and f"is in use by process {holder.pid} (python" in line
               and line.endswith("skipped, left to it") for line in lines)
  finally:
    holder.kill()
  result = sweep.run(config, str(tmp_path), axes, log=lines.append)
  assert [os.path.basename(p) for p in stub.runs] == ["seed_0", "seed_1"]
  assert [r["workdir"] for r in result["runs"]] == ["seed_0", "seed_1"]


@pytest.mark.slow
def test_launcher_refuses_bad_shards_and_names_missing_points(tmp_path):
  for args, message in [
      (["--shard=0/4"], "error: flag --shard=0/4: K must lie in 1..4"),
      (["--shard=4"], "error: flag --shard=4: expected K/N"),
      (["--shard=1/2", "--collect"], "error: flags shard=1/2, collect=True:"
       " --shard runs a share of the points and --collect runs none"),
  ]:
    done = _launch(f"--workdir={tmp_path}", "--vary=seed=0,1", *args)
    assert done.returncode == 2, (args, done.stderr[-2000:])
    assert done.stderr.count("\n") == 1 and done.stderr.startswith(
        message), (args, done.stderr)
  assert not os.listdir(tmp_path)
  done = _launch(f"--workdir={tmp_path}", "--vary=seed=0,1", "--collect")
  assert done.returncode == 1, done.stderr[-2000:]
  assert done.stderr == (f"error: {tmp_path}: 2 of 2 points of the sweep are"
                         " not finished: seed_0, seed_1; run them (their"
                         " shards, or the sweep without --shard), then"
                         " collect again\n")
  assert not os.listdir(tmp_path)  # collecting writes nothing


@pytest.mark.slow
def test_real_shards_one_after_another_and_in_parallel_equal_one_sweep(
    tmp_path):
  """Smoke runs of the user-only model over two seeds: one process, three
  shards one after another (the last one empty), and two shards at once;
  each collected sweep.json equals the one process's."""
  # One data dir for the three sweeps: each seed's dataset is built once,
  # then found built (the points' results do not depend on where it is).
  grid = [f"--config={SMOKE}", "--config.models=('user',)",
          f"--config.data_dir={tmp_path / 'data'}", "--vary=seed=0,1"]
  whole = _launch(f"--workdir={tmp_path / 'whole'}", *grid)
  assert whole.returncode == 0, whole.stderr[-3000:]
  expected = _load(tmp_path / "whole" / "sweep.json")
  assert len(expected["runs"]) == 2 and len(expected["groups"]) == 1

  workdir = tmp_path / "one_after_another"
  for k in (1, 2, 3):
    done = _launch(f"--workdir={workdir}", *grid, f"--shard={k}/3")
    assert done.returncode == 0, done.stderr[-3000:]
    assert not (workdir / "sweep.json").exists()
    assert "# Sweep over" not in done.stdout  # no table of its own
    assert f"sweep: shard {k}/3: {1 if k < 3 else 0} of 2 points;" in (
        done.stderr)
  collected = _launch(f"--workdir={workdir}", *grid, "--collect")
  assert collected.returncode == 0, collected.stderr[-3000:]
  assert _load(workdir / "sweep.json") == expected
  assert "### All runs" in collected.stdout

  workdir = tmp_path / "in_parallel"
  shards = [subprocess.Popen(
      [sys.executable, "-m", "launch.sweep", f"--workdir={workdir}", *grid,
       f"--shard={k}/2"], cwd=REPO, stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True) for k in (1, 2)]
  for shard in shards:
    _, stderr = shard.communicate(timeout=600)
    assert shard.returncode == 0, stderr[-3000:]
  collected = _launch(f"--workdir={workdir}", *grid, "--collect")
  assert collected.returncode == 0, collected.stderr[-3000:]
  assert _load(workdir / "sweep.json") == expected
