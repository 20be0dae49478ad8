"""Per-track inputs: each track from its audio file, else its npz mels.

Real builds of a zenodo release and a playlist export whose tracks come
partly as audio/<id>.<ext>, partly as spectrograms/mels<id>.npz, some as
both (audio wins) and some as neither (audio_missing).
"""

import json
import os
import shutil

import numpy as np
import pytest
import tensorflow_datasets as tfds

from ctxtag import audio
from ctxtag import datasets
from ctxtag import errors
from ctxtag import labels
from ctxtag.sources import assemble
from ctxtag.sources import build_report
from ctxtag.sources import mels
from ctxtag.sources import playlists
from tests import playlist_fixture
from tests import zenodo_fixture as fixture

ZENODO = "contextual_tags/zenodo"
PLAYLISTS = "contextual_tags/playlists"


def _report(path: str) -> dict:
  with open(os.path.join(path, build_report.REPORT_FILE)) as f:
    return json.load(f)


def _records(path: str, split: str) -> dict[int, dict]:
  source = tfds.builder_from_directory(path).as_data_source(split)
  return {int(source[i]["song_id"]): source[i] for i in range(len(source))}


def _kept(path: str) -> dict[str, list[tuple]]:
  return {split: sorted(
      (song, int(u), labels.LABELS[int(c)])
      for song, record in _records(path, split).items()
      for u, c in zip(record["pairs"]["user_id"], record["pairs"]["label"]))
          for split in ("train", "validation", "test")}


def _npz_mel(manual: str, song: int) -> np.ndarray:
  with np.load(os.path.join(manual, "spectrograms", f"mels{song}.npz")) as f:
    return np.log1p(audio.COMPRESSION * f["arr_0"][0]).astype(np.float16)


def _audio_mel(path: str) -> np.ndarray:
  mel, _ = audio.excerpt_from_file(path, audio.PAPER_EXCERPT_SECONDS,
                                   max_padding_seconds=1.0)
  return mel.astype(np.float16)


@pytest.fixture(scope="module")
def mixed_build(tmp_path_factory):
  root = tmp_path_factory.mktemp("mixed")
  manual = fixture.write_mixed_release(str(root / "manual"))
  return manual, datasets.build(ZENODO, str(root / "data"), manual,
                                workers=2)


@pytest.mark.slow
def test_each_track_is_read_from_its_audio_else_its_npz(mixed_build):
  manual, path = mixed_build
  report = _report(path)
  assert report["sources"] == fixture.EXPECTED_MIXED_SOURCES
  dropped = {reason: (e["tracks"], e["pairs"], e["users"])
             for reason, e in report["dropped"].items()}
  assert dropped == fixture.EXPECTED_DROPPED
  assert report["dropped"]["audio_missing"]["examples"] == [
      fixture.MIXED_NEITHER]
  assert report["dropped"]["audio_unreadable"]["examples"] == [
      fixture.UNREADABLE_TRACK]
  assert report["padded"] == 1
  assert _kept(path) == {s: sorted(p)
                         for s, p in fixture.EXPECTED_KEPT.items()}
  train = _records(path, "train")
  for song in (13, 14):  # npz only
    np.testing.assert_array_equal(train[song]["mel"], _npz_mel(manual, song))
  both = fixture.MIXED_BOTH  # audio wins
  np.testing.assert_array_equal(
      train[both]["mel"],
      _audio_mel(os.path.join(manual, "audio", f"{both}.wav")))
  text = datasets.build_report_text(path)
  assert "tracks read from audio/: 5, from spectrograms/: 3" in text


@pytest.mark.slow
@pytest.mark.parametrize("value,sources,missing", [
    ("files", {"audio": 5, "spectrograms": 0}, [13, 14, 22, 23]),
    ("audio", {"audio": 5, "spectrograms": 0}, [13, 14, 22, 23]),
    ("spectrograms", {"audio": 0, "spectrograms": 4}, [12, 15, 16, 21, 23]),
])
def test_the_audio_option_still_forces_one_folder(tmp_path, value, sources,
                                                  missing):
  manual = fixture.write_mixed_release(str(tmp_path / "manual"))
  path = datasets.build(ZENODO, str(tmp_path / "data"), manual,
                        f"audio={value}", workers=1)
  report = _report(path)
  assert report["sources"] == sources
  entry = report["dropped"]["audio_missing"]
  assert entry["tracks"] == len(missing)
  assert entry["examples"] == missing[:build_report.MAX_EXAMPLES]


@pytest.mark.slow
def test_forcing_a_folder_that_is_not_there_names_it(tmp_path):
  manual = fixture.write_release(str(tmp_path / "manual"))  # audio/ only
  with pytest.raises(errors.DatasetError,
                     match=r"spectrograms: no such directory, and setting"
                           r" audio=spectrograms reads only it"):
    datasets.build(ZENODO, str(tmp_path / "data"), manual,
                   "audio=spectrograms", workers=1)
  with pytest.raises(errors.ConfigError, match="setting audio must be auto"):
    mels.AudioSettings(audio="mp3").validate()


@pytest.mark.slow
def test_the_npz_excerpt_rule_applies_only_when_a_track_is_an_npz(tmp_path):
  manual = fixture.write_mixed_release(str(tmp_path / "manual"))
  with pytest.raises(errors.ConfigError,
                     match=r"setting excerpt_seconds=2: 3 track\(s\) are read"
                           r" from spectrograms/ \(e.g. .*mels13.npz\)"):
    datasets.build(ZENODO, str(tmp_path / "data"), manual,
                   "excerpt_seconds=2", workers=1)
  assert not os.path.exists(tmp_path / "data")  # a refused build leaves none
  # Every npz of this release has an audio file too: audio wins, no npz is
  # read, and the excerpt may change.
  other = fixture.write_release(str(tmp_path / "other"))
  os.makedirs(os.path.join(other, "spectrograms"))
  fixture.write_npz_mel(os.path.join(other, "spectrograms", "mels11.npz"), 11)
  path = datasets.build(ZENODO, str(tmp_path / "data"), other,
                        "excerpt_seconds=2", workers=1)
  assert _report(path)["sources"] == {"audio": 8, "spectrograms": 0}


@pytest.mark.slow
def test_a_cached_mel_is_never_served_for_the_other_kind(tmp_path):
  manual = fixture.write_mixed_release(str(tmp_path / "manual"))
  data = str(tmp_path / "data")
  first = datasets.build(ZENODO, data, manual, workers=1)
  both = fixture.MIXED_BOTH
  np.testing.assert_array_equal(
      _records(first, "train")[both]["mel"],
      _audio_mel(os.path.join(manual, "audio", f"{both}.wav")))
  # Track 11 loses its audio (now read from its npz); track 13 gains audio
  # (now read from it); the cache of the first build must serve neither.
  os.remove(os.path.join(manual, "audio", f"{both}.wav"))
  shutil.copy(os.path.join(manual, "audio", "15.wav"),
              os.path.join(manual, "audio", "13.wav"))
  again = datasets.build(ZENODO, data, manual, workers=1, force_rebuild=True)
  train = _records(again, "train")
  np.testing.assert_array_equal(train[both]["mel"], _npz_mel(manual, both))
  np.testing.assert_array_equal(
      train[13]["mel"], _audio_mel(os.path.join(manual, "audio", "13.wav")))
  assert not np.array_equal(train[13]["mel"], _npz_mel(manual, 13))
  assert _report(again)["sources"] == {"audio": 5, "spectrograms": 3}
  cache = os.path.join(data, "downloads", "ctxtag_mels")
  entries = {}
  for directory in os.listdir(cache):
    for name in os.listdir(os.path.join(cache, directory)):
      if name.endswith(".json"):
        with open(os.path.join(cache, directory, name)) as f:
          entries.setdefault(directory.partition("-")[0], set()).add(
              json.load(f)["source"])
  assert entries == {"audio": {"audio"}, "spectrograms": {"spectrograms"}}


# An export where nearly every track comes as mels only.
NPZ_ONLY = tuple(range(1, 28))
NPZ_TOO = (28,)


@pytest.mark.slow
def test_a_playlist_export_reads_each_track_from_either_folder(tmp_path):
  manual = playlist_fixture.write_playlists(
      str(tmp_path / "manual"), seconds=audio.PAPER_EXCERPT_SECONDS + 0.5,
      npz_only=NPZ_ONLY, npz_too=NPZ_TOO)
  mined = playlists.mine(playlists.read_playlist_inputs(manual),
                         playlists.MiningRules(), build_report.BuildReport())
  songs = set(np.unique(mined.pairs.song_id).tolist())
  assert playlist_fixture.NO_AUDIO_TRACK in songs
  expected = {"audio": len(songs - set(NPZ_ONLY)
                           - {playlist_fixture.NO_AUDIO_TRACK}),
              "spectrograms": len(songs & set(NPZ_ONLY))}
  assert expected["spectrograms"] > 20 and expected["audio"] >= 2
  path = datasets.build(PLAYLISTS, str(tmp_path / "data"), manual,
                        workers=2,
                        split=assemble.SplitSettings("cold_track", seed=4))
  report = _report(path)
  assert report["sources"] == expected
  assert report["dropped"]["audio_missing"] == {
      "tracks": 1, "pairs": 6, "users": 0,
      "examples": [playlist_fixture.NO_AUDIO_TRACK]}
  kept = sum(s["pairs"] for s in report["splits"].values())
  with_input = mined.pairs.song_id != playlist_fixture.NO_AUDIO_TRACK
  assert kept == int(with_input.sum())
  assert all(s["tracks"] > 0 for s in report["splits"].values())
  assert report["split_guarantee"].startswith(
      "cold_track split: 0 of ")
  train = _records(path, "train")
  assert set(train) & set(NPZ_ONLY)
  for song in set(train) & set(NPZ_ONLY):
    np.testing.assert_array_equal(train[song]["mel"], _npz_mel(manual, song))


def test_build_progress_shows_an_eta_only_once_a_rate_exists(capsys,
                                                            monkeypatch):
  clock = iter([100.0, 106.0, 112.0])  # start, then a line every 6 s
  monkeypatch.setattr(mels.time, "time", lambda: next(clock))
  progress = mels._Progress(total=10)  # pylint: disable=protected-access
  progress.update(0)
  progress.update(4)
  lines = capsys.readouterr().err.splitlines()
  assert lines == ["audio: 0/10 tracks, starting",
                   "audio: 4/10 tracks, 0.3 tracks/s, ETA 0:18"]
