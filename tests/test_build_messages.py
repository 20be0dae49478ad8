"""What a build says at each step: a missing manual dir, its own build line
instead of TFDS's, decoder notes attributed to their file, a cold split's
guarantee."""

import errno
import json
import os
import re
import subprocess
import sys

import pytest

from ctxtag import datasets
from ctxtag import errors
from ctxtag import files
from ctxtag.sources import assemble
from ctxtag.sources import build_report
from tests import zenodo_fixture as fixture
from tfds_builders import contextual_tags

ZENODO = "contextual_tags/zenodo"
CORRUPT_TRACK = 14  # its mp3 is damaged, but decodes


def _build_command(*flags) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", "launch.build_dataset", *flags],
                        capture_output=True, text=True)


@pytest.mark.slow
@pytest.mark.parametrize("make", ["missing", "empty"])
def test_a_missing_or_empty_manual_dir_is_one_line_and_leaves_nothing(
    tmp_path, make):
  manual = tmp_path / "manual"
  if make == "empty":
    manual.mkdir()
  data = tmp_path / "data"
  with pytest.raises(errors.DatasetError) as raised:
    datasets.build(ZENODO, str(data), str(manual))
  message = str(raised.value)
  assert "\n" not in message
  assert f"manual dir {manual}: " in message
  for expected in ("train_set.csv", "validation_set.csv", "test_set.csv",
                   "user_embeddings.csv", "audio/<song_id>.mp3",
                   "spectrograms/mels<song_id>.npz",
                   f"python -m launch.fetch_audio --manual_dir={manual}"):
    assert expected in message
  assert not data.exists()


@pytest.mark.slow
def test_the_launcher_refuses_a_missing_default_manual_dir_in_one_line(
    tmp_path):
  data = tmp_path / "data"
  done = _build_command(f"--dataset={ZENODO}", f"--data_dir={data}")
  assert done.returncode == 1, done.stderr
  assert done.stderr.strip().count("\n") == 0
  assert "no manual dir given" in done.stderr
  assert "python -m launch.fetch_audio --manual_dir=" in done.stderr
  assert "Downloading and preparing" not in done.stdout + done.stderr
  assert not data.exists()


@pytest.mark.slow
def test_a_build_says_what_it_builds_and_where_decoder_notes_come_from(
    tmp_path):
  manual = fixture.write_release(str(tmp_path / "manual"))
  corrupt = os.path.join(manual, "audio", f"{CORRUPT_TRACK}.mp3")
  fixture.corrupt_mp3(corrupt, CORRUPT_TRACK, fixture.EXCERPT_SECONDS + 2)
  data = tmp_path / "data"
  done = _build_command(f"--dataset={ZENODO}", f"--manual_dir={manual}",
                        f"--data_dir={data}", "--workers=2",
                        f"--option=excerpt_seconds={fixture.EXCERPT_SECONDS}")
  assert done.returncode == 0, done.stderr
  terminal = done.stdout + done.stderr
  assert "Unknown size" not in terminal
  assert "Downloading and preparing" not in terminal
  assert "downloaded and prepared" not in terminal
  path = os.path.join(str(data), "contextual_tags",
                      "zenodo-excerpt_seconds2.0", "2.0.0")
  assert (f"building contextual_tags/zenodo-excerpt_seconds2.0 2.0.0 into"
          f" {path} from {manual} ...") in done.stderr
  # The decoder's notes name no file: they are not on the terminal, but in
  # the report under the track they came from.
  assert "Illegal Audio-MPEG-Header" not in done.stderr
  with open(os.path.join(path, build_report.REPORT_FILE)) as f:
    notes = json.load(f)["decoder_notes"]
  by_song = {e["song_id"]: e for e in notes["examples"]}
  assert by_song[CORRUPT_TRACK]["file"] == corrupt
  assert by_song[CORRUPT_TRACK]["status"] == "ok"  # decoded past the damage
  assert "Illegal Audio-MPEG-Header" in by_song[CORRUPT_TRACK]["notes"]
  assert notes["tracks"] == len(notes["examples"])
  printed = [line for line in done.stdout.splitlines()
             if line.strip().startswith(f"song {CORRUPT_TRACK} ")]
  assert printed and corrupt in printed[0] and "Illegal" in printed[0]


@pytest.mark.slow
def test_decoder_notes_of_a_build_in_this_process_stay_off_the_terminal(
    tmp_path, capfd):
  manual = fixture.write_release(str(tmp_path / "manual"))
  corrupt = os.path.join(manual, "audio", f"{CORRUPT_TRACK}.mp3")
  fixture.corrupt_mp3(corrupt, CORRUPT_TRACK, fixture.EXCERPT_SECONDS + 2)
  path = datasets.build(ZENODO, str(tmp_path / "data"), manual,
                        f"excerpt_seconds={fixture.EXCERPT_SECONDS}",
                        workers=1)
  out, err = capfd.readouterr()
  assert "Illegal Audio-MPEG-Header" not in out + err
  text = datasets.build_report_text(path)
  assert f"song {CORRUPT_TRACK} ({corrupt}, kept): Note: Illegal" in text


@pytest.mark.slow
@pytest.mark.parametrize("strategy,noun", [("cold_user", "users"),
                                           ("cold_track", "tracks")])
def test_a_cold_split_prints_what_it_guarantees(tmp_path, capsys, strategy,
                                                noun):
  datasets.build("contextual_tags/simulated_small", str(tmp_path / "sim"),
                 split=assemble.SplitSettings(strategy, seed=1))
  out = capsys.readouterr().err  # notes go to stderr
  line, = [l for l in out.splitlines() if l.startswith(f"{strategy} split")]
  assert f"{strategy} split: 0 of " in line
  assert f" test {noun} are in train; 0 of " in line
  assert line.endswith(f" validation {noun} are in train")
  manual = fixture.write_release(str(tmp_path / "manual"))
  path = datasets.build(ZENODO, str(tmp_path / "data"), manual,
                        f"excerpt_seconds={fixture.EXCERPT_SECONDS}",
                        workers=1, split=assemble.SplitSettings(strategy))
  out = capsys.readouterr().err  # notes go to stderr
  with open(os.path.join(path, build_report.REPORT_FILE)) as f:
    guarantee = json.load(f)["split_guarantee"]
  assert guarantee in out and guarantee.startswith(f"{strategy} split: 0 of")
  assert guarantee in datasets.build_report_text(path)


def test_a_full_disk_while_writing_is_one_error_naming_the_dataset(
    tmp_path, monkeypatch):
  def no_space(self, split, **kwargs):
    del self, split, kwargs
    try:  # as a writer deep in TFDS reports it: wrapped
      raise OSError(errno.ENOSPC, "No space left on device")
    except OSError as error:
      raise RuntimeError("array_record writer failed") from error
  monkeypatch.setattr(contextual_tags.Builder, "_generate_examples", no_space)
  with pytest.raises(files.WriteError) as raised:
    datasets.build("contextual_tags/simulated_small", str(tmp_path / "data"))
  message = str(raised.value)
  assert "contextual_tags/simulated_small" in message
  assert "the disk filled up while the dataset was written" in message
  assert "\n" not in message
  parent = tmp_path / "data" / "contextual_tags" / "simulated_small"
  assert not [p for p in parent.glob("*") if not p.name.startswith(".")]


@pytest.mark.slow
def test_a_dataset_found_built_is_reused_and_says_so(tmp_path):
  data = tmp_path / "data"
  path = os.path.join(str(data), "contextual_tags", "simulated_small",
                      "2.0.0")
  flags = ("--dataset=contextual_tags/simulated_small", f"--data_dir={data}")
  first = _build_command(*flags)
  assert first.returncode == 0, first.stderr
  assert first.stdout.startswith(f"built {path} in ")
  again = _build_command(*flags)
  assert again.returncode == 0, again.stderr
  line = again.stdout.splitlines()[0]
  assert re.fullmatch(re.escape(f"reused {path}, built earlier (") + r"[\d.]+"
                      r" MB on disk; --force_rebuild builds it anew\)", line)
  assert "building" not in again.stderr
  assert not re.search(r"^built ", again.stdout, re.M)
  forced = _build_command(*flags, "--force_rebuild")
  assert forced.returncode == 0, forced.stderr
  assert forced.stdout.startswith(f"built {path} in ")
  assert datasets.build_or_reuse("contextual_tags/simulated_small",
                                 str(data)) == (path, False)
  assert datasets.build_or_reuse("contextual_tags/simulated_small",
                                 str(tmp_path / "other"))[1] is True
