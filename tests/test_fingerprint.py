"""Tests of inputs.json: a real-data dataset knows what it was built from,
and is not reused once its manual dir holds other inputs."""

import json
import os
import re
import shutil

import pytest

from ctxtag import datasets
from ctxtag import errors
from ctxtag.sources import inputs
from tests import playlist_fixture
from tests import zenodo_fixture as fixture


# What is compared, on records made by hand.


def _record(tables=None, files=None, settings=None, manual_dir="/m"):
  return {"format": 1, "manual_dir": manual_dir,
          "settings": settings or {"config": "zenodo"},
          "tables": tables or {"train_set.csv": {"sha256": "a", "size": 1}},
          "files": files or {}}


def test_changes_name_each_table_and_count_the_files():
  old = _record(
      tables={"train_set.csv": {"sha256": "a", "size": 1},
              "user_embeddings.csv": {"sha256": "b", "size": 1},
              "test_set.csv": None},
      files={f"audio/{i}.mp3": [10, 1] for i in range(5)})
  files = {f"audio/{i}.mp3": [10, 1] for i in range(1, 5)}
  files.update({f"audio/{i}.mp3": [10, 1] for i in range(10, 22)})
  files["audio/4.mp3"] = [10, 2]
  files["spectrograms/mels7.npz"] = [5, 5]
  new = _record(
      tables={"train_set.csv": {"sha256": "c", "size": 1},
              "test_set.csv": {"sha256": "d", "size": 1}},
      files=files)
  assert inputs.changes(old, new) == [
      "test_set.csv added", "train_set.csv changed",
      "user_embeddings.csv removed",
      "12 audio files added (audio/10.mp3, audio/11.mp3, audio/12.mp3, ...),"
      " 1 removed (audio/0.mp3), 1 changed (audio/4.mp3)",
      "1 spectrogram file added (spectrograms/mels7.npz)"]
  assert inputs.changes(old, old) == []
  assert inputs.changes(old, _record(settings={"config": "x"}, **{
      k: old[k] for k in ("tables", "files")}))[0].startswith(
          "the build settings changed")
  assert inputs.changes({}, new) == ["its inputs.json is unreadable"]


def test_a_moved_manual_dir_with_the_same_inputs_has_no_changes():
  assert inputs.changes(_record(manual_dir="/a"), _record(manual_dir="/b")
                        ) == []


# Real builds.


def _build(manual, data_dir, **kwargs):
  return datasets.build("contextual_tags/zenodo", str(data_dir), manual,
                        workers=1, **kwargs)


@pytest.fixture
def built(tmp_path):
  """A zenodo dataset built from npz mels (the fastest real build)."""
  manual = fixture.write_release(str(tmp_path / "manual"), "spectrograms")
  path = _build(manual, tmp_path / "data")
  return manual, tmp_path / "data", path


def _refusal(manual, data_dir) -> str:
  with pytest.raises(errors.DatasetError) as error:
    _build(manual, data_dir)
  message = str(error.value)
  assert "\n" not in message
  assert "--force_rebuild" in message
  return message


@pytest.mark.slow
def test_the_build_records_its_inputs(built):
  manual, _, path = built
  with open(os.path.join(path, inputs.INPUTS_FILE)) as f:
    record = json.load(f)
  assert record["manual_dir"] == manual
  assert sorted(record["tables"]) == [
      "test_set.csv", "train_set.csv", "user_embeddings.csv",
      "validation_set.csv"]
  assert len(record["tables"]["train_set.csv"]["sha256"]) == 64
  assert sorted(record["files"]) == sorted(
      f"spectrograms/mels{song}.npz" for song in
      list(fixture.GOOD_TRACKS) + [fixture.TOO_SHORT_TRACK,
                                   fixture.UNREADABLE_TRACK])
  assert record["settings"]["config"] == "zenodo"


@pytest.mark.slow
def test_unchanged_inputs_are_reused(built, capsys):
  manual, data_dir, path = built
  capsys.readouterr()
  assert _build(manual, data_dir) == path
  assert "building" not in capsys.readouterr().err


@pytest.mark.slow
def test_an_edited_csv_is_refused_naming_it(built):
  manual, data_dir, path = built
  with open(os.path.join(manual, "train_set.csv"), "a") as f:
    f.write("11,77,1,0,0,0,0,0,0,0,0,0\n")
  message = _refusal(manual, data_dir)
  assert message.startswith(f"{path} was built from other inputs than"
                            f" {manual} holds now: train_set.csv changed;")


@pytest.mark.slow
def test_added_and_changed_audio_are_refused_counting_them(built):
  manual, data_dir, _ = built
  os.makedirs(os.path.join(manual, "audio"))
  for song in (11, 12):
    fixture.write_audio_file(os.path.join(manual, "audio", f"{song}.wav"),
                             song, 2.0)
  npz = os.path.join(manual, "spectrograms", "mels13.npz")
  stat = os.stat(npz)
  os.utime(npz, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
  os.remove(os.path.join(manual, "spectrograms", "mels14.npz"))
  message = _refusal(manual, data_dir)
  assert ("2 audio files added (audio/11.wav, audio/12.wav); 1 spectrogram"
          " file removed (spectrograms/mels14.npz), 1 changed"
          " (spectrograms/mels13.npz)") in message


@pytest.mark.slow
def test_another_manual_dir_is_refused_unless_it_holds_the_same(built,
                                                                capsys):
  manual, data_dir, path = built
  # The same files, times kept (a moved or `cp -a` copy): reused, noted.
  moved = shutil.copytree(manual, manual + "_moved")
  capsys.readouterr()
  assert _build(moved, data_dir) == path
  assert (f"note: {path} was built from {manual}; {moved} holds the same"
          " inputs") in capsys.readouterr().err
  # Other files: refused, naming both directories.
  other = fixture.write_release(manual + "_other", "spectrograms")
  message = _refusal(other, data_dir)
  assert message.startswith(
      f"{path} was built from other inputs than {other} holds now (it was"
      f" built from {manual}): ")
  assert re.search(r"\d+ spectrogram files changed", message)


@pytest.mark.slow
def test_force_rebuild_takes_the_new_inputs(built):
  manual, data_dir, path = built
  os.remove(os.path.join(manual, "spectrograms", "mels14.npz"))
  assert _build(manual, data_dir, force_rebuild=True) == path
  assert _build(manual, data_dir) == path  # recorded anew
  with open(os.path.join(path, "build_report.json")) as f:
    assert json.load(f)["dropped"]["audio_missing"]["tracks"] == 2


@pytest.mark.slow
def test_a_dataset_without_a_record_is_noted_not_refused(built, capsys):
  manual, data_dir, path = built
  os.remove(os.path.join(path, inputs.INPUTS_FILE))
  with open(os.path.join(manual, "train_set.csv"), "a") as f:
    f.write("11,77,1,0,0,0,0,0,0,0,0,0\n")
  capsys.readouterr()
  assert _build(manual, data_dir) == path
  assert "did not record its inputs" in capsys.readouterr().err


@pytest.mark.slow
def test_playlists_record_their_csvs_and_an_added_embeddings_file(tmp_path):
  manual = playlist_fixture.write_playlists(str(tmp_path / "manual"),
                                            num_tracks=12, seconds=2.0)
  options = "excerpt_seconds=2.0"
  path = datasets.build("contextual_tags/playlists", str(tmp_path / "data"),
                        manual, options, workers=1)
  with open(os.path.join(path, inputs.INPUTS_FILE)) as f:
    tables = json.load(f)["tables"]
  assert set(tables) == {"playlists.csv", "playlist_tracks.csv",
                         "user_embeddings.csv"}
  assert tables["user_embeddings.csv"] is None
  shutil.copy(os.path.join(os.path.dirname(__file__), "..", "README.md"),
              os.path.join(manual, "user_embeddings.csv"))
  with pytest.raises(errors.DatasetError, match="user_embeddings.csv added"):
    datasets.build("contextual_tags/playlists", str(tmp_path / "data"),
                   manual, options, workers=1)


@pytest.mark.slow
def test_simulated_datasets_record_nothing(small_dataset_path, capsys):
  assert not os.path.exists(os.path.join(small_dataset_path,
                                         inputs.INPUTS_FILE))
