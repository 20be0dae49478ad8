"""Tests of the audio front end against librosa and closed forms."""

import librosa
import numpy as np
import pytest
import soundfile

from ctxtag import audio


def _sine(frequency, seconds, sample_rate=audio.SAMPLE_RATE, channels=1):
  time = np.arange(int(seconds * sample_rate)) / sample_rate
  wave = 0.5 * np.sin(2 * np.pi * frequency * time).astype(np.float32)
  return np.stack([wave] * channels, axis=1) if channels > 1 else wave


def test_thirty_seconds_give_646_frames():
  mel = audio.log_mel(_sine(440, 30))
  assert mel.shape == (646, 96)
  assert audio.num_frames(30) == 646
  assert mel.dtype == np.float32


def test_excerpt_length_sets_frames():
  assert audio.log_mel(_sine(440, 10), excerpt_seconds=10).shape == (216, 96)
  assert audio.log_mel(_sine(440, 10), excerpt_seconds=3).shape == (
      audio.num_frames(3), 96)
  assert audio.num_frames(3) == 1 + (3 * 22050) // 1024


def test_sine_peaks_in_the_band_that_contains_it():
  mel = audio.log_mel(_sine(440, 5), excerpt_seconds=5)
  peak = int(mel.mean(axis=0).argmax())
  edges = librosa.mel_frequencies(n_mels=audio.N_MELS + 2,
                                  fmax=audio.SAMPLE_RATE / 2)
  assert edges[peak] <= 440 <= edges[peak + 2]
  assert abs(edges[peak + 1] - 440) < (edges[peak + 2] - edges[peak]) / 2


def test_matches_direct_librosa_computation_for_stereo_44k_file(tmp_path):
  rng = np.random.default_rng(0)
  stereo = rng.uniform(-0.5, 0.5, size=(44100 * 4, 2)).astype(np.float32)
  path = tmp_path / "track.wav"
  soundfile.write(path, stereo, 44100, subtype="FLOAT")
  ours = audio.log_mel_from_file(path, excerpt_seconds=3)

  samples, _ = librosa.load(path, sr=22050, mono=True)
  mel = librosa.feature.melspectrogram(
      y=samples[:3 * 22050], sr=22050, n_fft=1024, hop_length=1024, n_mels=96)
  expected = np.log(1 + 100 * mel).T
  np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("extension,fmt", [
    ("wav", "WAV"), ("flac", "FLAC"), ("ogg", "OGG"), ("mp3", "MP3")])
def test_decodes_compressed_formats(tmp_path, extension, fmt):
  path = tmp_path / f"tone.{extension}"
  soundfile.write(path, _sine(1000, 3, 44100, channels=2), 44100, format=fmt)
  mel = audio.log_mel_from_file(path, excerpt_seconds=2)
  edges = librosa.mel_frequencies(n_mels=98, fmax=11025)
  peak = int(mel.mean(axis=0).argmax())
  assert mel.shape == (audio.num_frames(2), 96)
  assert edges[peak] <= 1000 <= edges[peak + 2]


def test_short_audio_fails_naming_the_file_unless_padded(tmp_path):
  path = tmp_path / "short.wav"
  soundfile.write(path, _sine(440, 1.0), audio.SAMPLE_RATE)
  with pytest.raises(audio.AudioError, match="short.wav.*shorter than the 3 s"):
    audio.log_mel_from_file(path, excerpt_seconds=3)
  padded = audio.log_mel_from_file(path, excerpt_seconds=3, pad=True)
  assert padded.shape == (audio.num_frames(3), 96)
  # The padded tail is silence: log(1 + 100 * 0) = 0.
  assert np.all(padded[-10:] == 0)


def test_unreadable_audio_fails_naming_the_file(tmp_path):
  path = tmp_path / "broken.mp3"
  path.write_bytes(b"this is no audio")
  with pytest.raises(audio.AudioError, match="broken.mp3"):
    audio.log_mel_from_file(path)
  with pytest.raises(audio.AudioError, match="missing.wav"):
    audio.log_mel_from_file(tmp_path / "missing.wav")


@pytest.mark.parametrize("rate,fmt", [(44100, "WAV"), (48000, "FLAC"),
                                      (44100, "MP3"), (48000, "OGG")])
def test_excerpt_decoding_equals_the_whole_file_at_any_offset(
    tmp_path, rate, fmt):
  rng = np.random.default_rng(rate)
  path = tmp_path / f"track.{fmt.lower()}"
  soundfile.write(path, rng.uniform(-0.5, 0.5, size=(rate * 6, 2)), rate,
                  format=fmt)
  whole, whole_rate = audio.load_audio(path)
  for offset in (0.0, 1.3):
    expected = audio.log_mel(whole, whole_rate, 3, offset_seconds=offset)
    ours = audio.log_mel_from_file(path, 3, offset_seconds=offset)
    np.testing.assert_allclose(ours, expected, atol=1e-4)


def test_padding_is_allowed_up_to_a_limit_and_reported(tmp_path):
  path = tmp_path / "short.wav"
  soundfile.write(path, _sine(440, 2.5), audio.SAMPLE_RATE)
  mel, padded = audio.excerpt_from_file(path, 3, max_padding_seconds=1.0)
  assert padded == pytest.approx(0.5, abs=1e-3)
  assert mel.shape == (audio.num_frames(3), 96)
  with pytest.raises(audio.AudioTooShortError,
                     match="short.wav: 1.50 s of audio.*1 s that may be"):
    audio.excerpt_from_file(path, 3, offset_seconds=1.0,
                            max_padding_seconds=1.0)


def test_bad_samples_paths_and_lengths_fail_clearly(tmp_path):
  path = tmp_path / "nan.wav"
  wave = _sine(440, 3)
  wave[100] = np.nan
  soundfile.write(path, wave, audio.SAMPLE_RATE, subtype="FLOAT")
  with pytest.raises(audio.AudioError, match="nan.wav: the audio holds NaN"):
    audio.log_mel_from_file(path, excerpt_seconds=2)
  with pytest.raises(audio.AudioError, match="gone.mp3: no such file"):
    audio.log_mel_from_file(tmp_path / "gone.mp3")
  for seconds in (float("nan"), float("inf"), 1e-6, -1.0):
    with pytest.raises(audio.AudioError, match="excerpt_seconds must be"):
      audio.log_mel(_sine(440, 3), excerpt_seconds=seconds)
  with pytest.raises(audio.AudioError, match="offset must be a finite"):
    audio.log_mel(_sine(440, 3), excerpt_seconds=1, offset_seconds=-1)


def test_an_empty_file_is_named_empty(tmp_path):
  path = tmp_path / "empty.mp3"
  path.write_bytes(b"")
  with pytest.raises(audio.AudioError, match=r"empty.mp3: the file is empty$"):
    audio.read_excerpt(str(path), 3.0)
