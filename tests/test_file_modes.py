"""Files ctxtag writes follow the umask like any other program's (0644
under umask 022), atomic writes included: mkstemp's 0600 would survive the
rename."""

import os
import stat
import subprocess
import sys

import pytest

from tests.fault_helpers import REPO

_WRITE_EVERY_KIND = """
import numpy as np
from ctxtag import files, report
files.write_text("a.txt", "a")
files.write_json("b.json", {"b": 1})
with files.atomic_open("c.npy", "wb") as f:
  np.save(f, np.zeros(3))
report.write_together({"d.md": "d", "e.png": b"e"})
"""


def _umask(mask):
  return lambda: os.umask(mask)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o027, 0o640),
                                        (0o077, 0o600)])
def test_every_writer_follows_the_umask(tmp_path, mask, mode):
  subprocess.run([sys.executable, "-c", _WRITE_EVERY_KIND], cwd=tmp_path,
                 check=True, preexec_fn=_umask(mask),
                 env=dict(os.environ, PYTHONPATH=REPO))
  for name in ("a.txt", "b.json", "c.npy", "d.md", "e.png"):
    assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == mode, name
  assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


@pytest.mark.slow
def test_a_whole_run_is_readable_by_the_group_under_umask_027(tmp_path):
  workdir = tmp_path / "run"
  subprocess.run([sys.executable, "-m", "launch.reproduce",
                  f"--workdir={workdir}", "--config=ctxtag/configs/smoke.py"],
                 cwd=REPO, check=True, capture_output=True,
                 preexec_fn=_umask(0o027), timeout=900)
  private = []
  for root, dirs, names in os.walk(workdir):
    for name in names + dirs:
      path = os.path.join(root, name)
      if os.path.islink(path):
        continue
      if not os.stat(path).st_mode & stat.S_IRGRP:
        private.append(os.path.relpath(path, workdir))
  assert not private, private[:10]
