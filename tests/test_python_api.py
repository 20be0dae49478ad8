"""docs/python.md's examples, run in order on a trained smoke run: the page
a notebook user reads cannot drift from the API."""

import os
import re
import shutil

import numpy as np
import soundfile

from tests.fault_helpers import REPO


def _examples() -> str:
  with open(os.path.join(REPO, "docs", "python.md")) as f:
    return "\n".join(re.findall(r"```python\n(.*?)```", f.read(), re.S))


def test_the_python_page_runs_as_written(smoke_run, tmp_path, monkeypatch):
  workdir = str(tmp_path / "run")
  shutil.copytree(smoke_run, workdir)
  os.makedirs(tmp_path / "music")
  soundfile.write(tmp_path / "music" / "a.wav",
                  np.random.default_rng(0).uniform(-0.3, 0.3, 3 * 22050),
                  22050)
  monkeypatch.chdir(tmp_path)
  code = _examples().replace('"workdirs/default"', repr(workdir))
  exec(compile(code, "docs/python.md", "exec"), {})  # pylint: disable=exec-used
  assert os.path.exists(tmp_path / "catalog_index" / "index.json")


def test_import_ctxtag_stays_light():
  import subprocess  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  loaded = subprocess.run(
      [sys.executable, "-c", "import ctxtag, sys; print('jax' in sys.modules,"
       " 'tensorflow_datasets' in sys.modules)"], capture_output=True,
      text=True, cwd=REPO, check=True).stdout.split()
  assert loaded == ["False", "False"]
