"""The launchers' common start and end (launch.cli): one line for a user
error, a traceback for a bug, nothing written by a refused command."""

import errno
import os
import re
import subprocess
import sys

import pytest

from ctxtag import errors
from ctxtag.sources import options
from ctxtag.sources import simulated
from ctxtag.sources import zenodo
from launch import cli
from launch import config_flag
from tests.fault_helpers import (GOOD_ROW, HEADER, REPO, TRACK_HEADER,
    launch_module, stderr_lines, write_table)


@pytest.mark.slow
def test_bad_csv_ends_with_one_line_naming_file_and_line(tmp_path):
  gt = write_table(tmp_path / "gt.csv", HEADER, [GOOD_ROW])
  audio = write_table(tmp_path / "audio.csv", TRACK_HEADER,
                 ["0," + ",".join(["0.5"] * 9)])
  args = ["launch.evaluate", f"--groundtruth={gt}",
          f"--audio_predictions={audio}", f"--output_dir={tmp_path}/out"]
  process = launch_module(*args)
  assert process.returncode == 1
  assert stderr_lines(process) == [
      f"error: {audio}, line 2: 10 fields, the header has 11"]
  assert not (tmp_path / "out").exists()

  debug = launch_module(*args, "--debug")
  assert debug.returncode == 1
  assert "Traceback (most recent call last)" in debug.stderr
  assert debug.stderr.rstrip().endswith(
      f"TableError: {audio}, line 2: 10 fields, the header has 11")


@pytest.mark.slow
@pytest.mark.parametrize("args,status,line", [
    (["--groundtruth={gt}", "--output_dir={out}"], 2,
     "error: no predictions to evaluate: give --audio_predictions,"
     " --user_predictions or --user_only_predictions"),
    (["--workdir={out}"], 1,
     "error: {out}: no such directory; expected the --workdir of a ctxtag"
     " run"),
    (["--workdir={tmp}", "--groundtruth={gt}"], 2,
     "error: --workdir evaluates a run; it takes no --groundtruth"),
    (["--split=train", "--workdir={tmp}"], 2,
     "error: flag --split=train: value should be one of <validation|test>"
     " (see --helpshort)"),
    (["--groundtruth={gt}", "--audio_predictions={gt}",
      "--validation_groundtruth={gt}", "--output_dir={out}"], 2,
     "error: thresholds are tuned on validation with both"
     " --validation_groundtruth and --validation_audio_predictions; give"
     " both or neither"),
    (["--groundtruth={gt}", "--user_predictions={gt}",
      "--validation_groundtruth={gt}", "--validation_audio_predictions={gt}",
      "--output_dir={out}"], 2,
     "error: --validation_audio_predictions tunes the audio model's"
     " thresholds; give --audio_predictions too"),
    (["--workdir={tmp}", "--train_groundtruth={gt}"], 2,
     "error: --workdir evaluates a run; it takes no --train_groundtruth"),
    (["--groundtruth={gt}", "--audio_predictions={gt}",
      "--bootstrap_resamples=-1", "--output_dir={out}"], 2,
     "error: flag --bootstrap_resamples=-1: -1 is not a non-negative"
     " integer (see --helpshort)"),
])
def test_evaluate_usage_errors_write_nothing(tmp_path, args, status, line):
  gt = write_table(tmp_path / "gt.csv", HEADER, [GOOD_ROW])
  names = {"gt": gt, "out": f"{tmp_path}/out", "tmp": str(tmp_path)}
  process = launch_module("launch.evaluate", *[a.format(**names) for a in args])
  assert process.returncode == status
  assert stderr_lines(process) == [line.format(**names)]
  assert sorted(os.listdir(tmp_path)) == ["gt.csv"]


_BUG = """
from launch import cli
def main(argv):
  {raise_}
cli.run(main)
"""


@pytest.mark.slow
@pytest.mark.parametrize("raise_,status,stderr", [
    ("raise KeyError('audio')", 1, "Traceback"),
    ("raise OSError(28, 'No space left on device')", 1,
     "error: No space left on device"),
    ("open('/nonexistent/file.csv')", 1,
     "error: /nonexistent/file.csv: No such file or directory"),
    ("from absl import app; raise app.UsageError('--model is required')", 2,
     "error: --model is required"),
])
def test_bugs_keep_their_traceback_and_user_errors_do_not(raise_, status,
                                                          stderr):
  process = subprocess.run(
      [sys.executable, "-c", _BUG.format(raise_=raise_)], capture_output=True,
      text=True, cwd=REPO, timeout=60)
  assert process.returncode == status
  if stderr == "Traceback":
    assert "Traceback (most recent call last)" in process.stderr
    assert process.stderr.rstrip().endswith("KeyError: 'audio'")
  else:
    assert stderr_lines(process) == [stderr]


def test_every_launcher_runs_through_cli():
  for name in ("build_dataset", "evaluate", "fetch_audio", "reproduce", "train",
               "sweep", "tag"):
    with open(os.path.join(REPO, "launch", f"{name}.py")) as f:
      text = f.read()
    assert "cli.run(main)" in text and "app.run(main)" not in text, name


# What each launcher's --helpshort lists beyond its own flags.
_KEY_FLAGS = {"coordinator_address", "num_processes", "process_id",
              "distributed_timeout", "debug"}
_RUN_FLAGS = {"config", "workdir"}


@pytest.mark.slow
@pytest.mark.parametrize("launcher,more", [
    ("build_dataset", set()), ("evaluate", set()), ("fetch_audio", set()),
    ("reproduce", _RUN_FLAGS), ("sweep", _RUN_FLAGS), ("tag", set()),
    ("train", _RUN_FLAGS)])
def test_helpshort_lists_config_and_the_several_host_flags(launcher, more):
  process = launch_module(f"launch.{launcher}", "--helpshort")
  assert process.returncode == 1, process.stderr  # absl's status for help
  sections = process.stdout.split("\n\n")
  main_section = next(s for s in sections
                      if s.startswith(os.path.join(REPO, "launch")))
  listed = set(re.findall(r"^  --(?:\[no\])?(\w+)", main_section, re.M))
  assert _KEY_FLAGS | more <= listed, sorted(listed)


def test_the_config_flag_reads_the_command_line_as_absl_does():
  read = config_flag._command_line  # pylint: disable=protected-access
  assert read("config", ["prog", "--workdir=w"]) == (None, [])
  assert read("config", ["prog", "--config=a.py:v", "--config.seed=1",
                         "--noconfig.audio.deep", "--configs=x"]) == (
                             "a.py:v", ["seed", "audio.deep"])
  assert read("config", ["prog", "-config", "b.py", "--config.x", "2"]) == (
      "b.py", ["x"])
  assert read("config", ["prog", "--config=a.py", "--config=c.py"]) == (
      "c.py", [])  # the last one wins
  assert read("config", ["prog", "--", "--config=a.py"]) == (None, [])


def test_cli_message_is_one_line_and_names_the_file():
  error = PermissionError(errno.EACCES, "Permission denied", "/x/results.json")
  assert cli.is_user_error(error)
  assert cli.message(error) == "/x/results.json: Permission denied"
  assert cli.message(errors.ConfigError("a\n  b")) == "a b"
  assert not cli.is_user_error(OSError(errno.EIO, "I/O error"))
  assert not cli.is_user_error(ValueError("a bug"))


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["train", "reproduce"])
def test_bad_config_value_on_a_launcher_is_one_line_and_writes_nothing(
    tmp_path, launcher):
  workdir = str(tmp_path / "run")
  process = subprocess.run(
      [sys.executable, "-m", f"launch.{launcher}", f"--workdir={workdir}",
       "--config.audio.batch_size=0"]
      + (["--model=audio"] if launcher == "train" else []),
      capture_output=True, text=True, cwd=REPO, timeout=120)
  assert process.returncode == 1
  assert stderr_lines(process) == [
      "error: config audio.batch_size=0: expected an integer >= 1"]
  assert not os.path.exists(workdir)


@pytest.mark.parametrize("source,value,message", [
    (simulated.SimulationConfig(), "nan", "is not a finite number"),
    (simulated.SimulationConfig(), "inf", "is not a finite number"),
    (simulated.SimulationConfig(), "1e-6", "must be >= 1 s to hold a beat"),
    (zenodo.Options(), "nan", "is not a finite number"),
    (zenodo.Options(), "1e-6", r"must be >= 0.046"),
])
def test_excerpt_seconds_out_of_range_is_refused(source, value, message):
  with pytest.raises(errors.ConfigError, match=message):
    options.replace(source, {"excerpt_seconds": value}, "dataset")


@pytest.mark.slow
@pytest.mark.parametrize("files_,args,line", [
    ({}, ["--config={tmp}/missing.py"],
     "error: --config={tmp}/missing.py: no such file; the shipped configs"
     " are default, fusions, paper, smoke in {configs}: name one as"
     " --config=ctxtag.configs.NAME from any directory, or by its path"),
    ({"broken.py": "def get_config(:\n"}, ["--config={tmp}/broken.py"],
     "error: --config={tmp}/broken.py, line 1: invalid syntax; expected a"
     " Python file defining get_config(), such as ctxtag/configs/default.py"),
    ({"empty.py": "SEED = 1\n"}, ["--config={tmp}/empty.py"],
     "error: --config={tmp}/empty.py: defines no get_config(); expected a"
     " Python file defining get_config(), such as ctxtag/configs/default.py"),
    ({}, ["--config=ctxtag/configs/smoke.py", "--config.seeed=1"],
     "error: --config.seeed: the config has no key seeed; closest: seed"),
    ({}, ["--config.audio.batchsize=4"],
     "error: --config.audio.batchsize: the config has no key"
     " audio.batchsize; closest: audio.batch_size, audio_user.batch_size,"
     " user.batch_size"),
    ({}, ["--config={tmp}/missing.py", "--config.seed=1"],
     "error: --config={tmp}/missing.py: no such file; the shipped configs"
     " are default, fusions, paper, smoke in {configs}: name one as"
     " --config=ctxtag.configs.NAME from any directory, or by its path"),
])
def test_config_file_mistakes_are_one_line_and_exit_2(tmp_path, files_, args,
                                                       line):
  for name, text in files_.items():
    (tmp_path / name).write_text(text)
  workdir = tmp_path / "run"
  process = launch_module("launch.train", f"--workdir={workdir}",
                          "--model=audio",
                          *[a.format(tmp=tmp_path) for a in args])
  assert process.returncode == 2
  assert stderr_lines(process) == [line.format(
      tmp=tmp_path, configs=config_flag.CONFIGS_DIR)]
  assert not workdir.exists()


def test_override_check_names_the_closest_keys():
  from ctxtag.configs import smoke  # pylint: disable=g-import-not-at-top
  config = smoke.get_config()
  check = config_flag.check_override
  check("config", config, "audio.batch_size")
  check("config", config, "models")
  with pytest.raises(config_flag.ConfigFileError,
                     match=r"--config.audio.learnig_rate: .* closest:"
                     r" audio.learning_rate"):
    check("config", config, "audio.learnig_rate")
  with pytest.raises(config_flag.ConfigFileError, match=r"its keys: .*seed"):
    check("config", config, "zzzzzzzz")


@pytest.mark.slow
@pytest.mark.parametrize("args,line", [
    (["launch.train", "--workdir=", "--model=audio"],
     "error: flag --workdir=: expected a path, got an empty value"
     " (see --helpshort)"),
    (["launch.evaluate", "--groundtruth=g.csv", "--audio_predictions=a.csv",
      "--output_dir=out", "--confidence=nan"],
     "error: flag --confidence=nan: expected a number in [0, 1]"
     " (see --helpshort)"),
    (["launch.build_dataset", "--split_fractions=0.1,0.1,0.8"],
     "error: --split_fractions sets the shares of a re-split: give"
     " --split_strategy=random, cold_user or cold_track too (without one the"
     " source's own splits are kept)"),
    (["launch.tag", "--workdir=w", "--list_users", "--audio=a.mp3"],
     "error: --list_users lists the run's users and tags nothing; drop"
     " --audio (or --list_users)"),
])
def test_flags_that_would_silently_do_something_else_are_refused(
    tmp_path, args, line):
  process = subprocess.run([sys.executable, "-m", *args], cwd=tmp_path,
                           capture_output=True, text=True, timeout=120)
  assert process.returncode == 2
  assert stderr_lines(process) == [line]
  assert not os.listdir(tmp_path)  # nothing written
