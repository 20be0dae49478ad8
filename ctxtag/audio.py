"""Audio front end: decoded audio -> compressed log-mel spectrogram.

The parameters of the paper's front end live here and nowhere else: mono,
22,050 Hz, mel power spectrogram with n_fft 1024, hop 1024, 96 bands
(librosa defaults otherwise, centred frames), compressed as log(1 + 100 mel).
A 30 s excerpt gives 646 frames x 96 bands.
"""

import os

import librosa
import numpy as np
import soundfile

SAMPLE_RATE = 22050
N_FFT = 1024
HOP_LENGTH = 1024
N_MELS = 96
COMPRESSION = 100.0
PAPER_EXCERPT_SECONDS = 30.0


class AudioError(ValueError):
  """Audio that cannot become a spectrogram of the requested size."""


def num_frames(excerpt_seconds: float) -> int:
  """Number of mel frames of an excerpt of `excerpt_seconds` (centred STFT)."""
  return 1 + excerpt_samples(excerpt_seconds) // HOP_LENGTH


def excerpt_samples(excerpt_seconds: float) -> int:
  if excerpt_seconds <= 0:
    raise AudioError(f"excerpt_seconds must be positive, got {excerpt_seconds}")
  return int(round(excerpt_seconds * SAMPLE_RATE))


def to_mono_22k(waveform: np.ndarray, sample_rate: int) -> np.ndarray:
  """Mixes `waveform` to mono and resamples it to `SAMPLE_RATE`.

  Args:
    waveform: samples as (num_samples,) or (num_samples, channels), the
      layout soundfile returns.
    sample_rate: sample rate of `waveform` in Hz.

  Returns:
    float32 mono samples at 22,050 Hz.
  """
  waveform = np.asarray(waveform, dtype=np.float32)
  if waveform.ndim == 2:
    waveform = waveform.mean(axis=1)
  elif waveform.ndim != 1:
    raise AudioError(
        f"waveform must be (samples,) or (samples, channels), got shape"
        f" {waveform.shape}")
  if sample_rate <= 0:
    raise AudioError(f"sample_rate must be positive, got {sample_rate}")
  if sample_rate != SAMPLE_RATE:
    waveform = librosa.resample(
        waveform, orig_sr=sample_rate, target_sr=SAMPLE_RATE)
  return waveform.astype(np.float32)


def log_mel(
    waveform: np.ndarray,
    sample_rate: int = SAMPLE_RATE,
    excerpt_seconds: float = PAPER_EXCERPT_SECONDS,
    pad: bool = False,
    source: str = "waveform",
) -> np.ndarray:
  """Compressed log-mel spectrogram of the start of `waveform`.

  Args:
    waveform: (samples,) or (samples, channels) at `sample_rate`.
    sample_rate: its sample rate in Hz.
    excerpt_seconds: length of the excerpt; sets the number of frames.
    pad: zero-pad audio shorter than the excerpt instead of failing.
    source: what the audio is (a file name) for error messages.

  Returns:
    float32 array of shape (num_frames(excerpt_seconds), N_MELS).
  """
  mono = to_mono_22k(waveform, sample_rate)
  wanted = excerpt_samples(excerpt_seconds)
  if mono.shape[0] < wanted:
    if not pad:
      raise AudioError(
          f"{source}: {mono.shape[0] / SAMPLE_RATE:.2f} s of audio, shorter"
          f" than the {excerpt_seconds:g} s excerpt (pass pad=True to"
          " zero-pad)")
    mono = np.pad(mono, (0, wanted - mono.shape[0]))
  mel = librosa.feature.melspectrogram(
      y=mono[:wanted], sr=SAMPLE_RATE, n_fft=N_FFT, hop_length=HOP_LENGTH,
      n_mels=N_MELS)
  return np.log1p(COMPRESSION * mel).T.astype(np.float32)


def load_audio(path: os.PathLike | str) -> tuple[np.ndarray, int]:
  """Decodes an audio file (WAV, FLAC, OGG, Opus, MP3) with soundfile.

  Returns:
    (samples, sample_rate), samples as (num_samples, channels) float32.
  """
  try:
    waveform, sample_rate = soundfile.read(
        os.fspath(path), dtype="float32", always_2d=True)
  except (soundfile.LibsndfileError, RuntimeError, OSError) as error:
    raise AudioError(f"{path}: cannot decode audio ({error})") from error
  if waveform.shape[0] == 0:
    raise AudioError(f"{path}: the file holds no audio samples")
  return waveform, sample_rate


def log_mel_from_file(
    path: os.PathLike | str,
    excerpt_seconds: float = PAPER_EXCERPT_SECONDS,
    pad: bool = False,
) -> np.ndarray:
  """`log_mel` of the start of the audio file at `path`."""
  waveform, sample_rate = load_audio(path)
  return log_mel(waveform, sample_rate, excerpt_seconds, pad, source=str(path))
