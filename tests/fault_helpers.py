"""What the fault tests share: the repository, table rows and a launcher
run as a subprocess."""

import errno
import json
import os
import subprocess
import sys

from ctxtag import labels

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEADER = "song_id,user_id," + ",".join(labels.LABELS)
TRACK_HEADER = "song_id," + ",".join(labels.LABELS)
GOOD_ROW = "0,0,1,0,0,0,0,0,0,0,0,0"


def write_table(path, header, rows):
  path.write_text(header + "\n" + "\n".join(rows) + "\n")
  return str(path)


def one_hot_rows(pairs):
  """Ground-truth rows 'song,user,<one-hot>' for (song, user, label)."""
  return [f"{s},{u}," + ",".join("1" if c == label else "0"
                                 for c in range(labels.NUM_LABELS))
          for s, u, label in pairs]


def launch_module(*args, timeout=120):
  return subprocess.run([sys.executable, "-m", *args], capture_output=True,
                        text=True, cwd=REPO, timeout=timeout)


def stderr_lines(process):
  return [line for line in process.stderr.splitlines() if line.strip()]


def track_rows(scores_by_track):
  return [f"{song}," + ",".join(f"{v:g}" for v in values)
          for song, values in enumerate(scores_by_track)]


def strict_json(path):
  def refuse(constant):
    raise AssertionError(f"{path} holds {constant}, not strict JSON")
  with open(path) as f:
    return json.load(f, parse_constant=refuse)


def fail_fsync(monkeypatch):
  def fsync(_):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
  monkeypatch.setattr(os, "fsync", fsync)
