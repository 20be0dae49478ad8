"""A run holds its dataset's reader lock while it reads it: a forced
rebuild by another process is refused instead of deleting the data under
the run."""

import os
import subprocess
import sys

import pytest

from ctxtag import locks
from ctxtag import run
from ctxtag.configs import smoke
from tests.fault_helpers import REPO


@pytest.mark.slow
def test_a_forced_rebuild_waits_for_the_runs_that_read_the_dataset(tmp_path):
  config = smoke.get_config()
  config.data_dir = str(tmp_path / "data")
  dataset_path = run.prepare_run(config, str(tmp_path / "run"))
  directory = os.path.dirname(dataset_path)
  assert locks.holds(directory, locks.BUILD_LOCK)
  command = [sys.executable, "-m", "launch.build_dataset",
             "--dataset=contextual_tags/simulated_small",
             f"--data_dir={tmp_path / 'data'}", "--force_rebuild"]
  refused = subprocess.run(command, capture_output=True, text=True,
                           cwd=REPO, timeout=300)
  assert refused.returncode == 1, refused.stderr
  line, = refused.stderr.strip().splitlines()
  assert line.startswith(f"error: {directory} is in use by")
  assert str(os.getpid()) in line
  assert os.path.exists(os.path.join(dataset_path, "dataset_info.json"))
  locks.release_kept(directory, locks.BUILD_LOCK)
  locks.release_kept(str(tmp_path / "run"))
  rebuilt = subprocess.run(command, capture_output=True, text=True, cwd=REPO,
                           timeout=300)
  assert rebuilt.returncode == 0, rebuilt.stderr
