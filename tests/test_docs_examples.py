"""The worked examples of docs/ run as written, from a directory that is not
the checkout, and leave nothing in the checkout or where they ran."""

import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHECKOUT_LINE = "CTXTAG=~/ctxtag"


def _block(page: str, marker: str) -> str:
  """The bash block that follows `<!-- test: marker -->` in `page`."""
  with open(os.path.join(REPO, page)) as f:
    text = f.read()
  found = re.search(rf"<!-- test: {re.escape(marker)} -->\n```bash\n(.*?)```",
                    text, re.S)
  assert found, f"{page} has no bash block marked {marker!r}"
  return found.group(1)


def _repo_entries() -> set[str]:
  return set(os.listdir(REPO))


@pytest.mark.slow
def test_the_playlists_example_runs_anywhere_and_writes_only_into_demo(
    tmp_path):
  script = _block("docs/data.md", "the playlists example")
  first, _, rest = script.partition("\n")
  # The reader's checkout is this one.
  assert first.startswith(CHECKOUT_LINE + " "), first
  script = f"CTXTAG={REPO}\n{rest}"
  elsewhere = tmp_path / "elsewhere"
  elsewhere.mkdir()
  temporary = tmp_path / "tmp"
  temporary.mkdir()
  before = _repo_entries()
  done = subprocess.run(
      ["bash", "-euo", "pipefail", "-c", script], cwd=elsewhere,
      capture_output=True, text=True, timeout=1200,
      # `python` is this interpreter, as in the activated environment the
      # docs assume.
      env=dict(os.environ, TMPDIR=str(temporary),
               PATH=os.path.dirname(sys.executable) + os.pathsep
               + os.environ.get("PATH", "")))
  assert done.returncode == 0, done.stderr[-3000:]
  report = done.stdout.strip().splitlines()[-1]
  assert report.startswith("report: ")
  demo = os.path.dirname(os.path.dirname(report[len("report: "):]))
  assert os.path.dirname(demo) == str(temporary)
  assert os.path.isfile(report[len("report: "):])
  # TFDS leaves an empty tmp*tfds directory in $TMPDIR per build (its
  # DatasetInfo.initialize_from_bucket); nothing else may be there.
  others = [p for p in temporary.iterdir() if str(p) != demo]
  assert all(p.name.endswith("tfds") and p.is_dir() and not any(p.iterdir())
             for p in others), others
  assert sorted(os.listdir(demo)) == ["data", "playlists", "workdir"]
  assert not list(elsewhere.iterdir())
  added = _repo_entries() - before
  assert not added & {"demo_playlists", "data", "workdirs"}, added
