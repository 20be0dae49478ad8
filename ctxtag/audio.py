"""Audio front end: decoded audio -> compressed log-mel spectrogram.

The parameters of the paper's front end live here and nowhere else: mono,
22,050 Hz, mel power spectrogram with n_fft 1024, hop 1024, 96 bands
(librosa defaults otherwise, centred frames), compressed as log(1 + 100 mel).
A 30 s excerpt gives 646 frames x 96 bands.

What the decoders say while a file is decoded (libmpg123 inside libsndfile
writes "Note: Illegal Audio-MPEG-Header ... Trying to resync" to the C-level
stderr, naming no file) and the warnings of numpy or librosa are the
decoded file's notes, never the terminal's: every function here that reads
a file captures them. Inside `captured_notes()` they go to its caller,
which attributes them to the file (a build report, a tagging JSON); outside
it, they come back as one `DecoderNotes` warning that names the file.
"""

import contextlib
import functools
import math
import os
import stat
import sys
import tempfile
import threading
import warnings

import librosa
import numpy as np
import soundfile
import threadpoolctl

from ctxtag import errors

SAMPLE_RATE = 22050
N_FFT = 1024
HOP_LENGTH = 1024
N_MELS = 96
COMPRESSION = 100.0
PAPER_EXCERPT_SECONDS = 30.0


class AudioError(errors.UserError, ValueError):
  """Audio that cannot become a spectrogram of the requested size."""


class AudioTooShortError(AudioError):
  """Audio that ends before the excerpt does."""


class NotAFileError(AudioError):
  """A path that is no regular file: a dangling link, a directory, a FIFO."""


class DecoderNotes(UserWarning):
  """What a decoder said about a file decoded outside `captured_notes`."""


# fd 2 is the process's, not a thread's: one capture at a time per process
# (re-entrant: a capture inside a capture, in one thread, stacks).
_CAPTURE_LOCK = threading.RLock()
_capturing = threading.local()


@contextlib.contextmanager
def captured_notes():
  """Captures what the block writes to file descriptor 2 (C libraries
  included) and the Python warnings it raises.

  Yields:
    A list that holds one string, the captured text (warnings as
    "RuntimeWarning: ..." lines), once the block ends.
  """
  captured = []
  with _CAPTURE_LOCK, tempfile.TemporaryFile() as capture, \
      warnings.catch_warnings(record=True) as raised:
    warnings.simplefilter("always")
    sys.stderr.flush()
    try:
      saved = os.dup(2)
    except OSError:  # no fd 2 to redirect: nothing can reach a terminal
      saved = None
    if saved is not None:
      os.dup2(capture.fileno(), 2)
    depth = getattr(_capturing, "depth", 0)
    _capturing.depth = depth + 1
    try:
      yield captured
    finally:
      _capturing.depth = depth
      sys.stderr.flush()
      if saved is not None:
        os.dup2(saved, 2)
        os.close(saved)
      capture.seek(0)
      text = capture.read().decode("utf-8", "replace")
      lines = [f"{w.category.__name__}: {w.message}" for w in raised]
      captured.append("\n".join([text.rstrip("\n")] * bool(text.strip())
                                + lines))


@contextlib.contextmanager
def _noting(path):
  """Runs a decode of `path` so that nothing it says reaches the terminal:
  inside a caller's `captured_notes` it is that caller's; otherwise its
  notes come back as a `DecoderNotes` warning naming the file (or, if it
  fails, on the AudioError as `decoder_notes`)."""
  if getattr(_capturing, "depth", 0):
    yield
    return
  failed = None
  with captured_notes() as notes:
    try:
      yield
    except AudioError as error:
      failed = error
  text = notes[0].strip()
  if failed is not None:
    failed.decoder_notes = text
    raise failed
  if text:
    lines = text.splitlines()
    more = f" (+{len(lines) - 1} more lines)" if len(lines) > 1 else ""
    # Pointed at the first caller outside this module and contextlib.
    level, frame = 1, sys._getframe()  # pylint: disable=protected-access
    while frame is not None and frame.f_code.co_filename in _OWN_FILES:
      level, frame = level + 1, frame.f_back
    warnings.warn(f"{_name(path)}: the decoder noted: {lines[0]}{more}",
                  DecoderNotes, stacklevel=level)


_OWN_FILES = (__file__, contextlib.__file__)


def _name(path) -> str:
  """`path` for a message: a byte of a name that is not UTF-8 as "\\xNN",
  so that printing the message never fails."""
  return os.fsencode(path).decode("utf-8", "backslashreplace")


def not_a_file(path: os.PathLike | str | bytes) -> str | None:
  """Why `path` is no regular file to decode ("a symbolic link to 'x',
  which does not exist", "a directory", "a FIFO", ...); None if it is one.
  Links to regular files are regular files."""
  try:
    mode = os.stat(path).st_mode
  except OSError as error:
    if not isinstance(error, FileNotFoundError):  # a link loop, no access
      return error.strerror or "cannot be read"
    if os.path.islink(path):
      return (f"a symbolic link to {_name(os.readlink(path))!r}, which does"
              " not exist")
    return "no such file"
  if stat.S_ISREG(mode):
    return None
  for test, kind in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
                     (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"),
                     (stat.S_ISSOCK, "a socket")):
    if test(mode):
      return kind
  return "not a regular file"


def num_frames(excerpt_seconds: float) -> int:
  """Number of mel frames of an excerpt of `excerpt_seconds` (centred STFT)."""
  return 1 + excerpt_samples(excerpt_seconds) // HOP_LENGTH


# Shorter excerpts hold no whole STFT frame.
MIN_EXCERPT_SECONDS = N_FFT / SAMPLE_RATE


def excerpt_samples(excerpt_seconds: float) -> int:
  if not (math.isfinite(excerpt_seconds)
          and excerpt_seconds >= MIN_EXCERPT_SECONDS):
    raise AudioError(
        f"excerpt_seconds must be a finite number >= {MIN_EXCERPT_SECONDS:.3f}"
        f" (one {N_FFT}-sample frame), got {excerpt_seconds}")
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
    offset_seconds: float = 0.0,
) -> np.ndarray:
  """Compressed log-mel spectrogram of an excerpt of `waveform`.

  Args:
    waveform: (samples,) or (samples, channels) at `sample_rate`.
    sample_rate: its sample rate in Hz.
    excerpt_seconds: length of the excerpt; sets the number of frames.
    pad: zero-pad audio shorter than the excerpt instead of failing.
    source: what the audio is (a file name) for error messages.
    offset_seconds: where the excerpt starts.

  Returns:
    float32 array of shape (num_frames(excerpt_seconds), N_MELS).
  """
  mono = to_mono_22k(_finite(waveform, source), sample_rate)
  start = _offset_samples(offset_seconds)
  return _mel_of_excerpt(mono[start:], excerpt_seconds,
                         math.inf if pad else 0.0, source,
                         excerpt_seconds + offset_seconds)[0]


def _finite(waveform: np.ndarray, source: str) -> np.ndarray:
  waveform = np.asarray(waveform, dtype=np.float32)
  if not np.all(np.isfinite(waveform)):
    raise AudioError(f"{source}: the audio holds NaN or infinite samples")
  return waveform


def _offset_samples(offset_seconds: float) -> int:
  if not (math.isfinite(offset_seconds) and offset_seconds >= 0):
    raise AudioError(
        f"excerpt offset must be a finite number of seconds >= 0, got"
        f" {offset_seconds}")
  return int(round(offset_seconds * SAMPLE_RATE))


def _mel_of_excerpt(mono: np.ndarray, excerpt_seconds: float,
                    max_padding_seconds: float, source: str,
                    needed_seconds: float) -> tuple[np.ndarray, float]:
  """(log-mel, seconds of zero padding) of mono 22.05 kHz samples that start
  at the excerpt."""
  wanted = excerpt_samples(excerpt_seconds)
  missing = max(wanted - mono.shape[0], 0)
  if missing > max_padding_seconds * SAMPLE_RATE:
    allowed = ("" if max_padding_seconds == 0 else
               f" by more than the {max_padding_seconds:g} s that may be"
               " zero-padded")
    raise AudioTooShortError(
        f"{source}: {mono.shape[0] / SAMPLE_RATE:.2f} s of audio from the"
        f" excerpt's start, shorter than the {excerpt_seconds:g} s excerpt"
        f"{allowed} (the excerpt needs {needed_seconds:g} s of audio)")
  mono = np.pad(mono[:wanted], (0, missing))
  # Finite samples far beyond full scale (a float WAV of 1e25) overflow the
  # power spectrum: an error naming the file, never NaNs or inf stored.
  with np.errstate(over="ignore", invalid="ignore"):
    mel = log_mels(mono[None])[0]
  if not np.all(np.isfinite(mel)):
    raise AudioError(
        f"{source}: samples up to {np.max(np.abs(mono)):.3g} (full scale is"
        " 1) overflow the mel spectrogram")
  return mel, missing / SAMPLE_RATE


def log_mels(excerpts_BxS: np.ndarray) -> np.ndarray:
  """Compressed log-mels of a batch of equal-length excerpts.

  librosa.feature.melspectrogram's computation with the front end's
  parameters (centred frames with zero padding, periodic Hann window, power
  spectrum, Slaney mel filterbank), done for the whole batch with one FFT
  call and one filterbank product per excerpt: librosa rebuilt the filterbank
  and applied it with an einsum that took 3/4 of the time.

  Args:
    excerpts_BxS: mono samples at SAMPLE_RATE, one excerpt per row.

  Returns:
    float32 array (B, 1 + S // HOP_LENGTH, N_MELS).
  """
  excerpts = np.asarray(excerpts_BxS, np.float32)
  padded = np.pad(excerpts, ((0, 0), (N_FFT // 2, N_FFT // 2)))
  frames_BxTxN = np.lib.stride_tricks.sliding_window_view(
      padded, N_FFT, axis=1)[:, ::HOP_LENGTH]
  spectrum = np.fft.rfft(frames_BxTxN * _hann_window(), axis=-1)
  power = np.square(spectrum.real) + np.square(spectrum.imag)
  # One matrix product per excerpt, on one BLAS thread: OpenBLAS rounds a
  # row by where it falls in its row blocks and thread shares, so a product
  # over the batch's stacked frames, or on a machine with more cores, gave
  # an excerpt's mel last bits that changed with its batch or machine.
  with _blas_threads().limit(limits=1, user_api="blas"):
    mel = np.matmul(power, _mel_basis_T())
  return np.log1p(COMPRESSION * mel).astype(np.float32)


@functools.lru_cache(maxsize=1)
def _blas_threads() -> threadpoolctl.ThreadpoolController:
  return threadpoolctl.ThreadpoolController()


@functools.lru_cache(maxsize=1)
def _hann_window() -> np.ndarray:
  """librosa's "hann" window: periodic (scipy's fftbins=True)."""
  return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)).astype(
      np.float32)


@functools.lru_cache(maxsize=1)
def _mel_basis_T() -> np.ndarray:
  """The mel filterbank, (N_FFT // 2 + 1, N_MELS), contiguous."""
  return np.ascontiguousarray(librosa.filters.mel(
      sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS).T)


def load_audio(path: os.PathLike | str) -> tuple[np.ndarray, int]:
  """Decodes a whole audio file (WAV, FLAC, OGG, Opus, MP3) with soundfile.

  Returns:
    (samples, sample_rate), samples as (num_samples, channels) float32.
  """
  with _noting(path):
    with _open(path) as f:
      waveform = f.read(dtype="float32", always_2d=True)
      sample_rate = f.samplerate
    if waveform.shape[0] == 0:
      raise AudioError(f"{_name(path)}: the file holds no audio samples")
    return _finite(waveform, _name(path)), sample_rate


# What libsndfile answers for a regular file it cannot decode, when its
# own words mislead: mpg123 calls a damaged MP3 "not a regular file
# (possibly a pipe?)".
_NOT_AUDIO = ("not a WAV, FLAC, OGG, Opus or MP3 file that libsndfile can"
              " read, or a damaged one")


def _why_not_decoded(error: Exception) -> str:
  text = getattr(error, "error_string", None) or str(error)
  if "possibly a pipe" in text or "Format not recognised" in text:
    return _NOT_AUDIO
  return text.strip().removeprefix("Error : ").rstrip(".")


@contextlib.contextmanager
def _open(path: os.PathLike | str):
  name = _name(path)
  why = not_a_file(path)
  if why is not None:
    raise (AudioError if why == "no such file" else NotAFileError)(
        f"{name}: {why}")
  try:
    with open(path, "rb") as f:
      empty = not f.read(1)
  except OSError as error:
    raise AudioError(f"{name}: cannot be read ({error.strerror})") from None
  if empty:
    # libsndfile calls an empty file "not a regular file (possibly a pipe?)"
    raise AudioError(f"{name}: the file is empty")
  try:
    f = soundfile.SoundFile(os.fspath(path))
  except (soundfile.LibsndfileError, RuntimeError, OSError) as error:
    raise AudioError(f"{name}: cannot decode audio"
                     f" ({_why_not_decoded(error)})") from error
  try:
    yield f
  except (soundfile.LibsndfileError, RuntimeError) as error:
    raise AudioError(f"{name}: cannot decode audio"
                     f" ({_why_not_decoded(error)})") from error
  finally:
    f.close()


# Audio decoded on each side of the excerpt, so that resampling the segment
# gives the samples that resampling the whole file would (the filter's
# support is a few milliseconds).
_RESAMPLE_MARGIN_SECONDS = 0.25


def read_excerpt(path: os.PathLike | str, excerpt_seconds: float,
                 offset_seconds: float = 0.0) -> np.ndarray:
  """Mono 22.05 kHz samples of a file from the excerpt's start on.

  Only the excerpt (and a short margin) is decoded: soundfile seeks in WAV,
  FLAC, OGG, Opus and MP3. The segment starts on a sample that both sample
  rates share, so its resampled samples line up with those of the whole
  file.

  Returns:
    float32 samples, at most the excerpt plus the margin long; fewer when
    the file ends sooner.
  """
  with _noting(path):
    return _read_excerpt(path, excerpt_seconds, offset_seconds)


def _read_excerpt(path, excerpt_seconds: float,
                  offset_seconds: float) -> np.ndarray:
  start_22k = _offset_samples(offset_seconds)
  with _open(path) as f:
    rate = f.samplerate
    common = rate // math.gcd(rate, SAMPLE_RATE)  # source samples per tick
    start = start_22k * rate / SAMPLE_RATE
    margin = _RESAMPLE_MARGIN_SECONDS * rate
    first = max(0, int((start - margin) // common) * common)
    stop = int(math.ceil(start + excerpt_seconds * rate + margin))
    if first > 0:
      f.seek(min(first, max(f.frames, 0)))
    waveform = f.read(frames=max(stop - first, 0), dtype="float32",
                      always_2d=True)
  if waveform.shape[0] == 0 and first == 0:
    raise AudioError(f"{_name(path)}: the file holds no audio samples")
  mono = to_mono_22k(_finite(waveform, _name(path)), rate)
  skip = start_22k - first * SAMPLE_RATE // rate
  return mono[skip:]


def log_mel_from_file(
    path: os.PathLike | str,
    excerpt_seconds: float = PAPER_EXCERPT_SECONDS,
    pad: bool = False,
    offset_seconds: float = 0.0,
) -> np.ndarray:
  """`log_mel` of an excerpt of the audio file at `path`."""
  return excerpt_from_file(path, excerpt_seconds, offset_seconds,
                           math.inf if pad else 0.0)[0]


def excerpt_from_file(
    path: os.PathLike | str,
    excerpt_seconds: float = PAPER_EXCERPT_SECONDS,
    offset_seconds: float = 0.0,
    max_padding_seconds: float = 0.0,
) -> tuple[np.ndarray, float]:
  """Log-mel of an excerpt of a file, zero-padding a short end if allowed.

  Args:
    path: the audio file.
    excerpt_seconds: length of the excerpt.
    offset_seconds: where it starts in the file.
    max_padding_seconds: how much audio may be missing at the end and be
      zero-padded; audio shorter than that raises `AudioTooShortError`.

  Returns:
    (log-mel of shape (num_frames(excerpt_seconds), N_MELS), seconds of
    padding).
  """
  with _noting(path):
    mono = _read_excerpt(path, excerpt_seconds, offset_seconds)
    return _mel_of_excerpt(mono, excerpt_seconds, max_padding_seconds,
                           _name(path), excerpt_seconds + offset_seconds)
