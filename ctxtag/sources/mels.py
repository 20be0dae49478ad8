"""Log-mels of users' own audio, computed in worker processes and cached.

Inputs live in the manual dir as either
  audio/<stem>.<ext>             mp3, ogg, opus, flac or wav, or
  spectrograms/mels<stem>.npz    the paper authors' mel power spectrograms,
                                 `arr_0` of shape (1, 646, 96),
where the stem is the song id (or, for playlist exports, the track's id).

Each track's log-mel goes to a cache directory as `<song_id>.npy` (float16),
with `<song_id>.json` saying what became of it (kept, padded, or why not).
Both are written under a temporary name and renamed, so a killed build
leaves only whole entries, and the next build reuses them: an entry is
reused while the audio file keeps its path, size and modification time.
The parent process keeps only these small statuses, never the mels, so
memory stays flat however many tracks there are.
"""

import dataclasses
import functools
import hashlib
import json
import multiprocessing
import os
import sys
import time

import numpy as np

from ctxtag import audio
from ctxtag import errors
from ctxtag import files

AUDIO_DIR = "audio"
SPECTROGRAM_DIR = "spectrograms"
# Preferred first when a track has files in several formats.
AUDIO_EXTENSIONS = ("flac", "wav", "ogg", "opus", "mp3")
KINDS = ("audio", "spectrograms")

# Reasons a track has no usable mel (build_report.json keys).
AUDIO_MISSING = "audio_missing"
AUDIO_UNREADABLE = "audio_unreadable"
AUDIO_TOO_SHORT = "audio_too_short"
SPECTROGRAM_WRONG_SHAPE = "spectrogram_wrong_shape"
SPECTROGRAM_INVALID = "spectrogram_invalid"
OK = "ok"


@dataclasses.dataclass(frozen=True)
class FrontEnd:
  """What a track's mel depends on besides its file."""
  excerpt_seconds: float
  offset_seconds: float
  max_padding_seconds: float

  @property
  def frames(self) -> int:
    return audio.num_frames(self.excerpt_seconds)

  def fingerprint(self) -> str:
    text = json.dumps([dataclasses.asdict(self), audio.SAMPLE_RATE,
                       audio.N_FFT, audio.HOP_LENGTH, audio.N_MELS,
                       audio.COMPRESSION])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclasses.dataclass(frozen=True)
class AudioSettings:
  """The audio settings of a real-data source (`--option key=value`)."""
  excerpt_seconds: float = audio.PAPER_EXCERPT_SECONDS
  offset_seconds: float = 0.0  # where the excerpt starts in each file
  max_padding_seconds: float = 1.0  # a shorter end is zero-padded, counted
  audio: str = "auto"  # "audio", "spectrograms", or "auto": whichever exists

  def validate(self) -> None:
    """Raises ConfigError naming the first invalid setting."""
    if self.excerpt_seconds < audio.MIN_EXCERPT_SECONDS:
      raise errors.ConfigError(
          f"setting excerpt_seconds must be >= {audio.MIN_EXCERPT_SECONDS:.3f},"
          f" got {self.excerpt_seconds}")
    for name in ("offset_seconds", "max_padding_seconds"):
      if getattr(self, name) < 0:
        raise errors.ConfigError(f"setting {name} must be >= 0, got"
                                 f" {getattr(self, name)}")
    if self.audio not in ("auto",) + KINDS:
      raise errors.ConfigError(
          f"setting audio must be auto, audio or spectrograms, got"
          f" {self.audio!r}")

  def front_end(self) -> "FrontEnd":
    return FrontEnd(self.excerpt_seconds, self.offset_seconds,
                    self.max_padding_seconds)

  def kind(self, manual_dir: str) -> str:
    """"audio" or "spectrograms": as set, or whichever the dir holds."""
    kind = detect_kind(manual_dir) if self.audio == "auto" else self.audio
    if kind == "spectrograms" and (
        self.excerpt_seconds != audio.PAPER_EXCERPT_SECONDS
        or self.offset_seconds != 0):
      raise errors.ConfigError(
          "the authors' spectrograms are fixed 30 s excerpts from the start;"
          " settings excerpt_seconds and offset_seconds cannot change with"
          " spectrograms")
    return kind

  def cache_dir(self, cache_root: str, kind: str) -> str:
    """Where mels of these settings are cached under `cache_root`."""
    return os.path.join(cache_root, f"{kind}-{self.front_end().fingerprint()}")


def detect_kind(manual_dir: str) -> str:
  """"audio" if manual_dir has audio/, else "spectrograms" if it has
  spectrograms/; an error naming both if it has neither."""
  for kind, directory in (("audio", AUDIO_DIR),
                          ("spectrograms", SPECTROGRAM_DIR)):
    if os.path.isdir(os.path.join(manual_dir, directory)):
      return kind
  raise errors.DatasetError(
      f"{manual_dir}: neither {AUDIO_DIR}/ (audio/<song_id>.mp3 ...) nor"
      f" {SPECTROGRAM_DIR}/ (mels<song_id>.npz) is here; put the tracks'"
      " audio in one of them")


def index_files(manual_dir: str, kind: str) -> dict[str, str]:
  """Stem -> path of every usable input file, scanned once."""
  if kind == "audio":
    directory = os.path.join(manual_dir, AUDIO_DIR)
    found = {}
    for name in sorted(os.listdir(directory)):
      stem, _, extension = name.rpartition(".")
      extension = extension.lower()
      if extension not in AUDIO_EXTENSIONS or not stem:
        continue
      path = os.path.join(directory, name)
      if stem in found:
        previous = found[stem].rpartition(".")[2].lower()
        if (AUDIO_EXTENSIONS.index(previous)
            <= AUDIO_EXTENSIONS.index(extension)):
          continue
      found[stem] = path
    return found
  directory = os.path.join(manual_dir, SPECTROGRAM_DIR)
  return {name[len("mels"):-len(".npz")]: os.path.join(directory, name)
          for name in sorted(os.listdir(directory))
          if name.startswith("mels") and name.endswith(".npz")}


@dataclasses.dataclass(frozen=True)
class Task:
  song_id: int
  path: str | None
  kind: str


def _entry(cache_dir: str, song_id: int, suffix: str) -> str:
  return os.path.join(cache_dir, f"{song_id}.{suffix}")


def _identity(path: str) -> dict:
  stat = os.stat(path)
  return {"path": os.path.abspath(path), "size": stat.st_size,
          "mtime_ns": stat.st_mtime_ns}


def cached_status(task: Task, cache_dir: str) -> dict | None:
  """The cached status of `task`, if it is still valid for its file."""
  try:
    with open(_entry(cache_dir, task.song_id, "json")) as f:
      status = json.load(f)
    if status["file"] != _identity(task.path):
      return None
  except (OSError, ValueError, KeyError):
    return None
  if status["status"] == OK and not os.path.exists(
      _entry(cache_dir, task.song_id, "npy")):
    return None
  return status


def _mel_of_npz(path: str, front_end: FrontEnd) -> np.ndarray:
  try:
    with np.load(path) as npz:
      power = npz["arr_0"]
  except Exception as error:  # zip, pickle and key errors of any kind
    raise _Defect(AUDIO_UNREADABLE, f"cannot read arr_0 ({error})") from None
  expected = (1, front_end.frames, audio.N_MELS)
  if power.shape != expected:
    raise _Defect(SPECTROGRAM_WRONG_SHAPE,
                  f"arr_0 has shape {power.shape}, expected {expected}")
  if not np.all(np.isfinite(power)) or np.any(power < 0):
    raise _Defect(SPECTROGRAM_INVALID, "arr_0 holds negative or non-finite"
                  " values; a mel power spectrogram is finite and >= 0")
  return np.log1p(audio.COMPRESSION * power[0].astype(np.float32))


class _Defect(Exception):

  def __init__(self, reason: str, message: str):
    super().__init__(message)
    self.reason = reason


def _mel(task: Task, front_end: FrontEnd) -> tuple[np.ndarray, float]:
  if task.kind == "spectrograms":
    return _mel_of_npz(task.path, front_end), 0.0
  try:
    return audio.excerpt_from_file(
        task.path, front_end.excerpt_seconds, front_end.offset_seconds,
        front_end.max_padding_seconds)
  except audio.AudioTooShortError as error:
    raise _Defect(AUDIO_TOO_SHORT, str(error)) from None
  except audio.AudioError as error:
    raise _Defect(AUDIO_UNREADABLE, str(error)) from None


def extract(task: Task, front_end: FrontEnd, cache_dir: str) -> dict:
  """Computes and caches the mel of one track; returns its status.

  Status: {"song_id", "status": "ok" or a defect reason, "message",
  "padded_seconds", "file": identity of the input file}.
  """
  if task.path is None:
    return {"song_id": task.song_id, "status": AUDIO_MISSING,
            "message": "no audio file", "padded_seconds": 0.0}
  cached = cached_status(task, cache_dir)
  if cached is not None:
    return cached
  status = {"song_id": task.song_id, "status": OK, "message": "",
            "padded_seconds": 0.0, "file": _identity(task.path)}
  try:
    mel, padded = _mel(task, front_end)
    with files.atomic_open(_entry(cache_dir, task.song_id, "npy"), "wb") as f:
      np.save(f, mel.astype(np.float16))
    status["padded_seconds"] = padded
  except _Defect as defect:
    status.update(status=defect.reason, message=str(defect))
  files.write_json(_entry(cache_dir, task.song_id, "json"), status)
  return status


def load(cache_dir: str, song_id: int) -> np.ndarray:
  """The cached float16 log-mel of a track whose status is "ok"."""
  return np.load(_entry(cache_dir, song_id, "npy"))


class _Progress:
  """One line every few seconds: tracks done, rate and ETA."""

  def __init__(self, total: int, every_seconds: float = 5.0):
    self.total, self.every = total, every_seconds
    self.start = self.last = time.time()
    self.done = 0

  def update(self, done: int, final: bool = False) -> None:
    self.done = done
    now = time.time()
    if not final and now - self.last < self.every:
      return
    self.last = now
    rate = done / max(now - self.start, 1e-9)
    eta = (self.total - done) / max(rate, 1e-9)
    print(f"audio: {done}/{self.total} tracks, {rate:.1f} tracks/s,"
          f" ETA {eta // 60:.0f}:{eta % 60:02.0f}", flush=True)


def _jax_started() -> bool:
  if "jax" not in sys.modules:
    return False
  try:
    from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top
    return xla_bridge.backends_are_initialized()
  except (ImportError, AttributeError):  # private API: assume the worst
    return True


def worker_pool(workers: int):
  """A process pool for front-end work.

  Forked workers inherit the imported front end (librosa and scipy take
  seconds to import in a fresh process), but forking a process whose JAX
  runtime has started risks a deadlock; then the workers are spawned.
  """
  if sys.platform == "linux" and not _jax_started():
    context = multiprocessing.get_context("fork")
    audio.log_mel(np.zeros(audio.SAMPLE_RATE, np.float32), excerpt_seconds=1)
  else:
    context = multiprocessing.get_context("spawn")
  return context.Pool(workers)


def extract_all(tasks: list[Task], front_end: FrontEnd, cache_dir: str,
                workers: int, beam_options=None) -> dict[int, dict]:
  """Mels of every task into `cache_dir`; returns song id -> status.

  Args:
    tasks: one per track.
    front_end: the excerpt settings.
    cache_dir: where the mels go (created if missing).
    workers: worker processes; 1 computes in this process.
    beam_options: Apache Beam PipelineOptions to run the extraction as a
      Beam pipeline instead of a process pool (None: no Beam).
  """
  os.makedirs(cache_dir, exist_ok=True)
  work = functools.partial(extract, front_end=front_end, cache_dir=cache_dir)
  if beam_options is not None:
    return _extract_with_beam(tasks, work, beam_options, cache_dir)
  progress = _Progress(len(tasks))
  statuses = {}
  if workers <= 1 or len(tasks) < 2:
    results = map(work, tasks)
    pool = None
  else:
    pool = worker_pool(min(workers, len(tasks)))
    results = pool.imap_unordered(work, tasks, chunksize=4)
  try:
    for status in results:
      statuses[status["song_id"]] = status
      progress.update(len(statuses))
  finally:
    if pool is not None:
      pool.terminate()
  progress.update(len(statuses), final=True)
  return statuses


def _extract_with_beam(tasks, work, beam_options, cache_dir):
  import apache_beam as beam  # pylint: disable=g-import-not-at-top
  with beam.Pipeline(options=beam_options) as pipeline:
    _ = (pipeline | "Tracks" >> beam.Create(tasks)
         | "Mels" >> beam.Map(work))
  statuses = {}
  for task in tasks:
    if task.path is None:
      statuses[task.song_id] = work(task)
      continue
    status = cached_status(task, cache_dir)
    if status is None:
      raise RuntimeError(f"the Beam pipeline left no status for song"
                         f" {task.song_id} in {cache_dir}")
    statuses[task.song_id] = status
  return statuses
