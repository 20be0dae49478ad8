"""Tests that a run stores its directories expanded and absolute, so a
workdir means the same data from any directory."""

import json
import os
import subprocess
import sys

import pytest

from ctxtag import compilation_cache
from ctxtag import datasets
from ctxtag import errors
from ctxtag import files
from ctxtag import run
from ctxtag.configs import smoke

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = os.path.join(REPO, "ctxtag", "configs", "smoke.py")


def test_absolute_expands_the_home_and_the_current_directory(
    tmp_path, monkeypatch):
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  monkeypatch.chdir(tmp_path)
  assert files.absolute("~/x") == str(tmp_path / "home" / "x")
  assert files.absolute("data/../d") == str(tmp_path / "d")
  assert files.absolute("/a/b/") == "/a/b"


def test_a_config_gets_absolute_paths_and_keeps_its_own(tmp_path,
                                                       monkeypatch):
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  monkeypatch.chdir(tmp_path)
  config = smoke.get_config()
  config.data_dir, config.manual_dir = "data", "~/manual"
  absolute = datasets.absolute_paths(config)
  assert absolute.data_dir == str(tmp_path / "data")
  assert absolute.manual_dir == str(tmp_path / "home" / "manual")
  assert (config.data_dir, config.manual_dir) == ("data", "~/manual")
  config.data_dir = ""  # the default (<workdir>/data) stays the default
  assert datasets.absolute_paths(config).data_dir == ""


def _old_workdir(tmp_path, data_dir: str) -> str:
  """A workdir an older ctxtag made from `tmp_path`: paths as given."""
  config = smoke.get_config()
  config.data_dir = data_dir
  workdir = tmp_path / "old"
  workdir.mkdir()
  (workdir / "config.json").write_text(
      config.to_json_best_effort(indent=2, sort_keys=True))
  dataset = os.path.join(data_dir, "contextual_tags", "simulated_small",
                         "2.0.0")
  os.makedirs(tmp_path / dataset)
  (workdir / "dataset_path.txt").write_text(dataset)
  return str(workdir)


def test_an_old_relative_config_matches_the_same_command_from_its_dir(
    tmp_path, monkeypatch):
  """Relative paths of an older config.json are read against the current
  directory, as that ctxtag did: the same command from the same directory
  matches, and the file is left as it is; from a directory where the run's
  dataset is not, it is refused rather than built anew there."""
  workdir = _old_workdir(tmp_path, "data")
  before = open(os.path.join(workdir, "config.json")).read()
  monkeypatch.chdir(tmp_path)
  config = smoke.get_config()
  config.data_dir = "data"
  run.save_config(config, workdir)
  config.data_dir = str(tmp_path / "data")  # spelt absolute: the same dir
  run.save_config(config, workdir)
  assert open(os.path.join(workdir, "config.json")).read() == before
  (tmp_path / "elsewhere").mkdir()
  monkeypatch.chdir(tmp_path / "elsewhere")
  config.data_dir = "data"
  with pytest.raises(errors.ConfigError,
                     match=r"data_dir 'data' is relative .* run the command"
                           " from the directory the run was made in"):
    run.save_config(config, workdir)


def test_a_new_config_is_saved_with_absolute_paths(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  config = smoke.get_config()
  config.data_dir = "data"
  run.save_config(config, str(tmp_path / "run"))
  with open(tmp_path / "run" / "config.json") as f:
    assert json.load(f)["data_dir"] == str(tmp_path / "data")
  run.save_config(config, str(tmp_path / "run"))  # the same command again


def _launch(cwd, module, *flags, env=None):
  return subprocess.run([sys.executable, "-m", module, *flags],
                        capture_output=True, text=True, cwd=cwd, timeout=600,
                        env=env)


@pytest.mark.slow
def test_a_run_made_with_relative_paths_works_from_anywhere(tmp_path):
  """reproduce with a relative workdir and data dir; evaluate from another
  directory finds the dataset; the same command rerun from the first
  directory reuses the run; `--workdir=~/x` is a directory x in $HOME."""
  here, there, home = (tmp_path / "here", tmp_path / "there",
                       tmp_path / "home")
  for directory in (here, there, home):
    directory.mkdir()
  # The compilation cache stays the real home's: a fresh one would compile
  # every program of four launches again.
  cache = compilation_cache.directory()
  env = dict(os.environ, HOME=str(home), **{compilation_cache.ENV: (
      os.path.dirname(cache) if cache else "off")})
  command = ("launch.reproduce", "--workdir=run", f"--config={SMOKE}",
             "--config.data_dir=data")
  process = _launch(here, *command, env=env)
  assert process.returncode == 0, process.stderr
  workdir = here / "run"
  with open(workdir / "config.json") as f:
    assert json.load(f)["data_dir"] == str(here / "data")
  dataset_path = (workdir / "dataset_path.txt").read_text()
  assert dataset_path.startswith(str(here / "data") + os.sep)
  process = _launch(there, "launch.evaluate", f"--workdir={workdir}",
                    "--bootstrap_resamples=0", env=env)
  assert process.returncode == 0, process.stderr
  process = _launch(here, *command, env=env)  # resumes, reuses, matches
  assert process.returncode == 0, process.stderr
  assert "building" not in process.stdout + process.stderr
  process = _launch(there, "launch.train", "--workdir=~/tilde",
                    f"--config={SMOKE}", "--model=user",
                    "--config.data_dir=~/data", env=env)
  assert process.returncode == 0, process.stderr
  assert (home / "tilde" / "user" / "summary.json").exists()
  assert (home / "data").is_dir()
  assert not (there / "~").exists()
  with open(home / "tilde" / "config.json") as f:
    assert json.load(f)["data_dir"] == str(home / "data")
