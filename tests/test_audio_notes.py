"""What decoding says, and to whom: decoder notes and library warnings are
the decoded file's, never the terminal's; undecodable files and entries
that are no files are named for what they are.

Real files: MP3s damaged as a broken download is (mpg123 writes "Illegal
Audio-MPEG-Header ... Trying to resync" to fd 2 while it decodes them),
bytes that are no audio, a float WAV far beyond full scale, dangling links,
directories and FIFOs.
"""

import os
import signal
import threading
import warnings

import numpy as np
import pytest
import soundfile

from ctxtag import audio
from ctxtag.sources import mels
from tests import zenodo_fixture as fixture


@pytest.fixture(name="damaged")
def _damaged(tmp_path) -> str:
  path = str(tmp_path / "damaged.mp3")
  fixture.corrupt_mp3(path, 14, 4.0)
  return path


def _no_warnings_raised(caught):
  raised = [str(w.message) for w in caught
            if not issubclass(w.category, DeprecationWarning)]
  assert not raised, raised


def test_notes_inside_a_capture_go_to_it_and_nowhere_else(damaged, capfd):
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    with audio.captured_notes() as notes:
      mel = audio.log_mel_from_file(damaged, 1.0)
  assert mel.shape == (audio.num_frames(1.0), audio.N_MELS)
  assert "Illegal Audio-MPEG-Header" in notes[0]
  assert "Trying to resync" in notes[0]
  out, err = capfd.readouterr()
  assert "Illegal" not in out + err and "resync" not in out + err
  _no_warnings_raised(caught)


@pytest.mark.parametrize("decode", [
    lambda path: audio.log_mel_from_file(path, 1.0),
    lambda path: audio.excerpt_from_file(path, 1.0),
    lambda path: audio.read_excerpt(path, 2.0),
    audio.load_audio,
])
def test_notes_outside_a_capture_are_one_warning_naming_the_file(
    damaged, capfd, decode):
  with pytest.warns(audio.DecoderNotes) as caught:
    decode(damaged)
  message, = [str(w.message) for w in caught
              if w.category is audio.DecoderNotes]
  assert message.startswith(f"{damaged}: the decoder noted: Note: Illegal")
  assert "more lines)" in message
  # Pointed at the caller, not at ctxtag's own lines.
  assert caught[0].filename == __file__
  out, err = capfd.readouterr()
  assert "Illegal" not in out + err and "resync" not in out + err


def test_a_file_that_is_no_audio_says_it_cannot_be_decoded(tmp_path, capfd):
  for name in ("garbage.mp3", "zeros.mp3", "garbage.wav", "garbage.flac",
               "garbage.ogg"):
    path = tmp_path / name
    path.write_bytes(bytes(5000) if name.startswith("zeros")
                     else b"not audio at all" * 300)
    with pytest.raises(audio.AudioError) as raised:
      audio.log_mel_from_file(path, 1.0)
    message = str(raised.value)
    assert message == (f"{path}: cannot decode audio (not a WAV, FLAC, OGG,"
                       " Opus or MP3 file that libsndfile can read, or a"
                       " damaged one)"), message
    assert "pipe" not in message
    # mpg123's notes on the way to giving up ride on the error.
    if name.endswith(".mp3"):
      assert "Trying to resync" in raised.value.decoder_notes
  out, err = capfd.readouterr()
  assert "Note:" not in out + err


def test_a_truncated_file_names_libsndfile_s_reason(tmp_path):
  whole = tmp_path / "whole.wav"
  soundfile.write(whole, np.zeros(44100, np.float32), 44100)
  cut = tmp_path / "cut.wav"
  cut.write_bytes(whole.read_bytes()[:30])
  with pytest.raises(audio.AudioError,
                     match=r"cut.wav: cannot decode audio \(Error in WAV"
                           r" file\. No 'data' chunk marker\)$"):
    audio.log_mel_from_file(cut, 1.0)


def test_samples_far_beyond_full_scale_are_an_error_not_nan_or_warnings(
    tmp_path, capfd):
  path = tmp_path / "huge.wav"
  rng = np.random.default_rng(0)
  soundfile.write(path, (rng.uniform(-1, 1, 3 * 44100) * 1e25).astype(
      np.float32), 44100, subtype="FLOAT")
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    with pytest.raises(audio.AudioError,
                       match=r"huge.wav: samples up to 1\.\d+e\+25 \(full"
                             r" scale is 1\) overflow the mel spectrogram"):
      audio.log_mel_from_file(path, 2.0)
  _no_warnings_raised(caught)
  out, err = capfd.readouterr()
  assert "RuntimeWarning" not in out + err and "overflow" not in out + err
  loud = tmp_path / "loud.wav"  # beyond full scale, but a mel all the same
  soundfile.write(loud, (rng.uniform(-1, 1, 3 * 44100) * 1e4).astype(
      np.float32), 44100, subtype="FLOAT")
  assert np.all(np.isfinite(audio.log_mel_from_file(loud, 2.0)))


def test_python_warnings_in_a_capture_become_its_notes(capfd):
  with audio.captured_notes() as notes:
    np.float32(3e38) * np.float32(10)  # overflow: numpy warns
  assert "RuntimeWarning: overflow encountered" in notes[0]
  assert "overflow" not in capfd.readouterr().err


def test_captures_nest_and_threads_take_turns(damaged):
  with audio.captured_notes() as outer:
    with audio.captured_notes() as inner:
      audio.read_excerpt(damaged, 1.0)
    os.write(2, b"outer's own line\n")
  assert "Illegal" in inner[0] and "outer's own line" not in inner[0]
  assert outer[0] == "outer's own line"
  # The old name is the same capture.
  assert mels.captured_stderr is audio.captured_notes
  results = []

  def decode():
    with audio.captured_notes() as notes:
      audio.read_excerpt(damaged, 1.0)
    results.append(notes[0])

  threads = [threading.Thread(target=decode) for _ in range(3)]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join()
  assert len(results) == 3
  assert all(r.count("Note: Trying to resync") == results[0].count(
      "Note: Trying to resync") > 0 for r in results)


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


def test_entries_that_are_no_files_are_named_for_what_they_are(
    tmp_path, deadline):
  del deadline
  dangling = tmp_path / "dangling.wav"
  os.symlink(tmp_path / "gone" / "x.wav", dangling)
  directory = tmp_path / "folder.mp3"
  directory.mkdir()
  fifo = tmp_path / "pipe.flac"
  os.mkfifo(fifo)
  expected = {
      dangling: f"a symbolic link to '{tmp_path / 'gone' / 'x.wav'}', which"
                " does not exist",
      directory: "a directory", fifo: "a FIFO"}
  for path, why in expected.items():
    assert audio.not_a_file(path) == why
    with pytest.raises(audio.NotAFileError) as raised:
      audio.log_mel_from_file(path, 1.0)
    assert str(raised.value) == f"{path}: {why}"
  linked = tmp_path / "linked.wav"
  soundfile.write(tmp_path / "real.wav", np.zeros(44100, np.float32), 44100)
  os.symlink(tmp_path / "real.wav", linked)
  assert audio.not_a_file(linked) is None
  assert audio.log_mel_from_file(linked, 0.5).shape[1] == audio.N_MELS
  with pytest.raises(audio.AudioError, match=r"gone.wav: no such file$") as e:
    audio.log_mel_from_file(tmp_path / "gone.wav", 1.0)
  assert not isinstance(e.value, audio.NotAFileError)
