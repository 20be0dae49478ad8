"""A release's inputs are what they claim, or are counted as what they are.

Real files in a manual dir: npz mels of every dtype numpy can save, a track
with two audio files, dangling links, a directory and a FIFO where audio
should be, and real builds that count each under its reason.
"""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from ctxtag import audio
from ctxtag import datasets
from ctxtag.sources import build_report
from ctxtag.sources import mels
from tests import zenodo_fixture as fixture

ZENODO = "contextual_tags/zenodo"
SHAPE = (1, audio.num_frames(audio.PAPER_EXCERPT_SECONDS), audio.N_MELS)
FRONT_END = mels.AudioSettings().front_end()


def _extract(path: str, kind: str, cache: str) -> dict:
  os.makedirs(cache, exist_ok=True)
  return mels.extract(mels.Task(7, path, kind, cache), FRONT_END)


def _npz(tmp_path, name: str, array) -> str:
  path = str(tmp_path / f"mels{name}.npz")
  np.savez(path, array)
  return path


@pytest.mark.parametrize("array,dtype", [
    (np.ones(SHAPE, bool), "bool"),
    (np.ones(SHAPE, np.complex64), "complex64"),
    (np.full(SHAPE, 1 + 0j, np.complex128), "complex128"),
    (np.ones(SHAPE, np.int64), "int64"),
    (np.ones(SHAPE, np.uint8), "uint8"),
    (np.zeros(SHAPE, [("power", np.float32)]), "[('power', '<f4')]"),
])
def test_an_npz_that_is_not_real_floating_point_is_its_own_defect(
    tmp_path, capfd, array, dtype):
  status = _extract(_npz(tmp_path, "x", array), "spectrograms",
                    str(tmp_path / "cache"))
  assert status["status"] == mels.SPECTROGRAM_WRONG_DTYPE
  assert status["message"] == (
      f"arr_0 holds {dtype} values; a mel power spectrogram is real floating"
      " point (float16, float32 or float64)")
  assert not os.path.exists(tmp_path / "cache" / "7.npy")
  # Casting complex to float would have warned on the terminal.
  assert "ComplexWarning" not in capfd.readouterr().err


def test_an_npz_of_objects_is_refused_without_running_its_pickle(tmp_path):
  witness = tmp_path / "ran"
  # An object array's pickle may run any code when loaded.
  array = np.empty(1, object)
  array[0] = _Witness(str(witness))
  status = _extract(_npz(tmp_path, "x", array), "spectrograms",
                    str(tmp_path / "cache"))
  assert status["status"] == mels.SPECTROGRAM_WRONG_DTYPE
  assert "dtype object" in status["message"]
  assert not witness.exists()


class _Witness:
  """Touches a file when unpickled."""

  def __init__(self, path):
    self.path = path

  def __reduce__(self):
    return (open, (self.path, "w"))


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_real_floating_point_of_any_width_is_mel_power(tmp_path, dtype):
  power = np.random.default_rng(0).exponential(0.01, SHAPE).astype(dtype)
  status = _extract(_npz(tmp_path, "x", power), "spectrograms",
                    str(tmp_path / "cache"))
  assert status["status"] == mels.OK
  np.testing.assert_array_equal(
      mels.load(str(tmp_path / "cache"), 7),
      np.log1p(100 * power[0].astype(np.float32)).astype(np.float16))


def test_files_that_are_no_npz_say_what_they_are(tmp_path):
  npy = str(tmp_path / "mels1.npz")
  with open(npy, "wb") as f:
    np.save(f, np.ones(SHAPE, np.float32))
  junk = tmp_path / "mels2.npz"
  junk.write_bytes(b"not a zip file")
  cache = str(tmp_path / "cache")
  for path, why in ((npy, "an .npy array, not an .npz archive"),
                    (str(junk), "not an .npz archive")):
    status = _extract(path, "spectrograms", cache)
    assert (status["status"], status["message"]) == (
        mels.AUDIO_UNREADABLE, f"cannot read arr_0 ({why})")


def test_statuses_cached_under_fewer_npz_checks_are_checked_again(tmp_path):
  cache = str(tmp_path / "cache")
  path = _npz(tmp_path, "x", np.ones(SHAPE, bool))
  status = _extract(path, "spectrograms", cache)
  # As a ctxtag that kept bool mels cached it.
  status.update(status=mels.OK, npz_checks=2)
  with open(os.path.join(cache, "7.json"), "w") as f:
    json.dump(status, f)
  np.save(os.path.join(cache, "7.npy"), np.zeros(SHAPE[1:], np.float16))
  assert _extract(path, "spectrograms", cache)["status"] == (
      mels.SPECTROGRAM_WRONG_DTYPE)


@pytest.fixture(name="deadline")
def _deadline():
  """Fails a test that blocks (opening a FIFO would) instead of hanging."""
  def expired(signum, frame):
    del signum, frame
    raise TimeoutError("blocked for 20 s")
  previous = signal.signal(signal.SIGALRM, expired)
  signal.alarm(20)
  yield
  signal.alarm(0)
  signal.signal(signal.SIGALRM, previous)


def test_entries_that_are_no_files_are_counted_not_fatal(tmp_path, deadline):
  del deadline
  cache = str(tmp_path / "cache")
  dangling = tmp_path / "7.mp3"
  os.symlink("/nonexistent/7.mp3", dangling)
  folder = tmp_path / "8.wav"
  folder.mkdir()
  fifo = tmp_path / "9.flac"
  os.mkfifo(fifo)
  npz_link = tmp_path / "mels7.npz"
  os.symlink("/nonexistent/mels7.npz", npz_link)
  for path, kind, why in (
      (dangling, "audio",
       "a symbolic link to '/nonexistent/7.mp3', which does not exist"),
      (folder, "audio", "a directory"), (fifo, "audio", "a FIFO"),
      (npz_link, "spectrograms", "a symbolic link to"
       " '/nonexistent/mels7.npz', which does not exist")):
    status = _extract(str(path), kind, cache)
    assert status["status"] == mels.AUDIO_NOT_A_FILE
    assert status["message"] == why
    assert status["source"] == kind
    assert status["file"] == {"path": str(path)}


def test_the_regular_file_of_a_track_is_used_before_a_broken_one(tmp_path):
  directory = tmp_path / "audio"
  directory.mkdir()
  for name in ("5.mp3", "5.wav", "6.ogg"):
    fixture.write_audio_file(str(directory / name), 5, 1.0)
  os.symlink("/nonexistent/5.flac", directory / "5.flac")  # first by kind
  os.symlink("/nonexistent/6.wav", directory / "6.wav")
  os.symlink("/nonexistent/7.mp3", directory / "7.mp3")
  (directory / "8.MP3").write_bytes(b"")
  (directory / "8.mp3").write_bytes(b"")
  inputs, ignored = mels.index_inputs(str(tmp_path), mels.AudioSettings())
  assert {stem: os.path.basename(p) for stem, (p, _) in inputs.items()} == {
      "5": "5.wav", "6": "6.ogg", "7": "7.mp3", "8": "8.MP3"}
  assert {stem: [os.path.basename(p) for p in paths]
          for stem, paths in ignored.items()} == {
              "5": ["5.mp3", "5.flac"], "6": ["6.wav"], "8": ["8.mp3"]}
  # The fetcher sees the same file per track.
  assert mels.index_files(str(tmp_path), "audio")["5"].endswith("5.wav")


def _report(path: str) -> dict:
  with open(os.path.join(path, build_report.REPORT_FILE)) as f:
    return json.load(f)


@pytest.mark.slow
def test_a_build_counts_each_defect_and_lists_tracks_with_two_files(
    tmp_path):
  manual = fixture.write_release(str(tmp_path / "manual"))
  folder = os.path.join(manual, "audio")
  # 11 (wav, 4 pairs) becomes a dangling link; 12 (flac) gains an mp3;
  # 13 (ogg) a dangling flac, which is ignored for the ogg.
  os.remove(os.path.join(folder, "11.wav"))
  os.symlink(os.path.join(manual, "moved", "11.wav"),
             os.path.join(folder, "11.wav"))
  fixture.write_audio_file(os.path.join(folder, "12.mp3"), 12,
                           fixture.EXCERPT_SECONDS + 0.5)
  os.symlink("/nonexistent/13.flac", os.path.join(folder, "13.flac"))
  done = subprocess.run(
      [sys.executable, "-m", "launch.build_dataset", f"--dataset={ZENODO}",
       f"--manual_dir={manual}", f"--data_dir={tmp_path / 'data'}",
       "--workers=2", f"--option=excerpt_seconds={fixture.EXCERPT_SECONDS}"],
      capture_output=True, text=True, cwd=tmp_path)
  assert done.returncode == 0, done.stderr
  assert "Traceback" not in done.stderr
  path = os.path.join(str(tmp_path / "data"), "contextual_tags",
                      "zenodo-excerpt_seconds2.0", "2.0.0")
  report = _report(path)
  assert report["dropped"][mels.AUDIO_NOT_A_FILE] == {
      "tracks": 1, "pairs": 4, "users": 0, "examples": [11]}
  for reason, counts in fixture.EXPECTED_DROPPED.items():
    entry = report["dropped"][reason]
    assert (entry["tracks"], entry["pairs"], entry["users"]) == counts
  assert report["several_audio_files"] == {"tracks": 2, "examples": [
      {"song_id": 12, "used": os.path.join(folder, "12.flac"),
       "ignored": [os.path.join(folder, "12.mp3")]},
      {"song_id": 13, "used": os.path.join(folder, "13.ogg"),
       "ignored": [os.path.join(folder, "13.flac")]}]}
  assert report["sources"]["audio"] == 8
  assert (f"    song 12: used {folder}/12.flac, ignored {folder}/12.mp3"
          in done.stdout)
  assert "several audio files for 2 track(s)" in done.stdout
  assert "audio_not_a_file                   1        4" in done.stdout
  kept = sum(s["pairs"] for s in report["splits"].values())
  expected = sum(len(p) for p in fixture.EXPECTED_KEPT.values())
  assert kept == expected - 4  # track 11's pairs, and no other


@pytest.mark.slow
def test_strict_stops_at_a_dangling_link_naming_it(tmp_path):
  manual = fixture.write_release(str(tmp_path / "manual"))
  for name in ("train_set.csv", "validation_set.csv", "test_set.csv"):
    _keep_good_rows(os.path.join(manual, name))
  os.remove(os.path.join(manual, "audio", "12.flac"))
  os.symlink("/nonexistent/12.flac",
             os.path.join(manual, "audio", "12.flac"))
  done = subprocess.run(
      [sys.executable, "-m", "launch.build_dataset", f"--dataset={ZENODO}",
       f"--manual_dir={manual}", f"--data_dir={tmp_path / 'data'}",
       "--workers=1", f"--option=excerpt_seconds={fixture.EXCERPT_SECONDS}",
       "--strict"], capture_output=True, text=True)
  assert done.returncode == 1, done.stderr
  line = done.stderr.strip().splitlines()[-1]
  assert line.startswith(f"error: {manual}/audio/12.flac: song 12: a"
                         " symbolic link to '/nonexistent/12.flac', which does"
                         " not exist"), line
  assert "Traceback" not in done.stderr


def _keep_good_rows(path: str) -> None:
  """Leaves the rows of good tracks and users, so that --strict meets the
  audio first."""
  with open(path) as f:
    header, *rows = f.read().splitlines()
  good = {str(s) for s in fixture.GOOD_TRACKS}
  users = {str(u) for u in fixture.GOOD_USERS}
  kept, seen = [], set()
  for row in rows:
    cells = row.split(",")
    if (cells[0] in good and cells[1] in users and cells[2:].count("1") == 1
        and (cells[0], cells[1]) not in seen):
      seen.add((cells[0], cells[1]))
      kept.append(row)
  with open(path, "w") as f:
    f.write("\n".join([header] + kept) + "\n")


@pytest.mark.slow
def test_a_release_of_npz_mels_counts_each_dtype(tmp_path):
  manual = fixture.write_release(str(tmp_path / "manual"), kind="spectrograms")
  folder = os.path.join(manual, "spectrograms")
  planted = {11: np.ones(SHAPE, bool), 14: np.ones(SHAPE, np.complex64),
             15: np.ones(SHAPE, np.int32)}
  for song, array in planted.items():
    np.savez(os.path.join(folder, f"mels{song}.npz"), array)
  half = np.random.default_rng(16).exponential(0.01, SHAPE).astype(np.float16)
  np.savez(os.path.join(folder, "mels16.npz"), half)
  path = datasets.build(ZENODO, str(tmp_path / "data"), manual, workers=1)
  report = _report(path)
  entry = report["dropped"][mels.SPECTROGRAM_WRONG_DTYPE]
  assert (entry["tracks"], entry["examples"]) == (3, [11, 14, 15])
  assert report["sources"] == {"audio": 0, "spectrograms": 8}
  assert "spectrogram_wrong_dtype" in datasets.build_report_text(path)

