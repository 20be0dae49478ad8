"""Log-mels of users' own audio, computed in worker processes and cached.

Inputs live in the manual dir, per track:
  audio/<stem>.<ext>             mp3, ogg, opus, flac or wav, else
  spectrograms/mels<stem>.npz    the paper authors' mel power spectrograms,
                                 `arr_0` of shape (1, 646, 96),
where the stem is the song id (or, for playlist exports, the track's id).
Each track is read from its audio file if it has one, else from its npz
(both folders are optional, and a release may mix them); a track with
neither is `audio_missing`. `--option=audio=files|spectrograms` reads one
folder only. A track with several audio files (123.flac and 123.mp3) is
read from the first regular file in the order of AUDIO_EXTENSIONS; the
others are listed in the build report. An entry that is no regular file (a
dangling link, a directory, a FIFO) is `audio_not_a_file`; an npz whose
arr_0 is not real floating point (bool, integers, complex, objects) is
`spectrogram_wrong_dtype`.

Each track's log-mel goes to a cache directory as `<song_id>.npy` (float16),
with `<song_id>.json` saying what became of it (kept, padded, or why not)
and which input it came from. Both are written under a temporary name and
renamed, so a killed build leaves only whole entries, and the next build
reuses them: an entry is reused while its input keeps its kind, path, size
and modification time. Mels made from audio and from npz files live in
separate directories, so one is never served for the other. The parent
process keeps only these small statuses, never the mels, so memory stays
flat however many tracks there are.

What the decoders (libsndfile, mpg123) write to the process's stderr while
a file is decoded ("Illegal Audio-MPEG-Header ... Trying to resync"), and
numpy's or librosa's warnings, are captured (`audio.captured_notes`) and
kept in that track's status as `decoder_notes`, so the build report names
the file instead of the terminal showing notes that name none.
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
import threadpoolctl

from ctxtag import audio
from ctxtag import errors
from ctxtag import files

AUDIO_DIR = "audio"
SPECTROGRAM_DIR = "spectrograms"
# Preferred first when a track has files in several formats.
AUDIO_EXTENSIONS = ("flac", "wav", "ogg", "opus", "mp3")
KINDS = ("audio", "spectrograms")  # in order of preference
# Values of the `audio` setting: "auto" reads each track from whichever of
# its inputs exists; "files" is another name for "audio".
AUDIO_SETTINGS = ("auto", "audio", "files", "spectrograms")
FETCH_COMMAND = "python -m launch.fetch_audio --manual_dir={manual_dir}"
# Decoder notes kept per track in its status (the rest are counted).
MAX_NOTE_CHARS = 2000

# Reasons a track has no usable mel (build_report.json keys).
AUDIO_MISSING = "audio_missing"
AUDIO_UNREADABLE = "audio_unreadable"
AUDIO_TOO_SHORT = "audio_too_short"
AUDIO_NOT_A_FILE = "audio_not_a_file"
SPECTROGRAM_WRONG_DTYPE = "spectrogram_wrong_dtype"
SPECTROGRAM_WRONG_SHAPE = "spectrogram_wrong_shape"
SPECTROGRAM_INVALID = "spectrogram_invalid"
OK = "ok"
# The checks an npz's mel passed; cached statuses of npz files made under
# fewer checks are made again (an npz is read in milliseconds). 2: values
# beyond float32 are spectrogram_invalid (they were kept as inf). 3: only
# real floating point is mel power (bool, complex, integers were kept).
NPZ_CHECKS = 3


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
  # "auto": each track from its audio file, else its npz; "audio" (or
  # "files"): audio files only; "spectrograms": npz files only.
  audio: str = "auto"

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
    if self.audio not in AUDIO_SETTINGS:
      raise errors.ConfigError(
          f"setting audio must be auto (each track's audio file, else its"
          f" npz), files (or audio) or spectrograms, got {self.audio!r}")

  def front_end(self) -> "FrontEnd":
    return FrontEnd(self.excerpt_seconds, self.offset_seconds,
                    self.max_padding_seconds)

  def kinds(self) -> tuple[str, ...]:
    """The kinds of input tracks are read from, preferred first."""
    if self.audio == "auto":
      return KINDS
    return ("spectrograms",) if self.audio == "spectrograms" else ("audio",)

  def cache_dir(self, cache_root: str, kind: str) -> str:
    """Where mels of `kind` and these settings are cached under
    `cache_root`."""
    return os.path.join(cache_root, f"{kind}-{self.front_end().fingerprint()}")


def audio_candidates(manual_dir: str) -> dict[str, list[str]]:
  """Stem -> every audio file of audio/ named for it, the one a build uses
  first: regular files (links to them included) before anything else (a
  dangling link, a directory), then in the order of AUDIO_EXTENSIONS; {} if
  the folder is absent."""
  directory = os.path.join(manual_dir, AUDIO_DIR)
  if not os.path.isdir(directory):
    return {}
  found = {}
  for name in sorted(os.listdir(directory)):
    stem, _, extension = name.rpartition(".")
    if extension.lower() not in AUDIO_EXTENSIONS or not stem:
      continue
    found.setdefault(stem, []).append(os.path.join(directory, name))
  for paths in found.values():
    if len(paths) > 1:  # a stat each only where there is a choice
      paths.sort(key=lambda path: (
          not os.path.isfile(path),
          AUDIO_EXTENSIONS.index(path.rpartition(".")[2].lower()), path))
  return found


def index_files(manual_dir: str, kind: str) -> dict[str, str]:
  """Stem -> path of every input file of `kind`, scanned once (for audio,
  the file a build uses, see `audio_candidates`); {} if its folder is
  absent."""
  if kind == "audio":
    return {stem: paths[0]
            for stem, paths in audio_candidates(manual_dir).items()}
  directory = os.path.join(manual_dir, SPECTROGRAM_DIR)
  if not os.path.isdir(directory):
    return {}
  return {name[len("mels"):-len(".npz")]: os.path.join(directory, name)
          for name in sorted(os.listdir(directory))
          if name.startswith("mels") and name.endswith(".npz")}


def _expected_inputs(manual_dir: str) -> str:
  return (f"{AUDIO_DIR}/<song_id>.<ext> ({', '.join(AUDIO_EXTENSIONS)};"
          f" `{FETCH_COMMAND.format(manual_dir=manual_dir)}` fetches the"
          f" release's previews) or {SPECTROGRAM_DIR}/mels<song_id>.npz")


def index_inputs(manual_dir: str, settings: AudioSettings
                 ) -> tuple[dict[str, tuple[str, str]], dict[str, list[str]]]:
  """Each track's input: its audio file if it has one, else its npz (as
  `settings.audio` allows).

  Returns:
    stem -> (path, kind) of the input read, and stem -> the other audio
    files of audio/ named for that stem, which are not read (123.mp3 beside
    the 123.flac that is), for the build report.

  Raises:
    DatasetError: none of the folders read is in `manual_dir`.
  """
  kinds = settings.kinds()
  folders = {"audio": AUDIO_DIR, "spectrograms": SPECTROGRAM_DIR}
  present = [kind for kind in kinds
             if os.path.isdir(os.path.join(manual_dir, folders[kind]))]
  if not present and len(kinds) == 1:
    raise errors.DatasetError(
        f"{os.path.join(manual_dir, folders[kinds[0]])}: no such directory,"
        f" and setting audio={settings.audio} reads only it; drop the"
        " setting to read each track from whichever of audio/ and"
        " spectrograms/ holds it")
  if not present:
    raise errors.DatasetError(
        f"{manual_dir}: neither {AUDIO_DIR}/ nor {SPECTROGRAM_DIR}/ is here;"
        f" put each track's input there as {_expected_inputs(manual_dir)}")
  found, ignored = {}, {}
  for kind in reversed(present):  # the preferred kind is written last
    if kind == "audio":
      for stem, paths in audio_candidates(manual_dir).items():
        found[stem] = (paths[0], kind)
        if len(paths) > 1:
          ignored[stem] = paths[1:]
    else:
      found.update((stem, (path, kind))
                   for stem, path in index_files(manual_dir, kind).items())
  return found, ignored


def check_front_end(front_end: "FrontEnd", tasks: list["Task"]) -> None:
  """Refuses excerpt settings that tracks read from npz files cannot have.

  The authors' spectrograms are fixed 30 s excerpts from the start of each
  track, so a changed excerpt could only be honoured for the audio tracks;
  the dataset would mix two front ends.

  Raises:
    ConfigError: naming the setting and an npz track's file.
  """
  npz = [task.path for task in tasks if task.kind == "spectrograms"
         and task.path is not None]
  if not npz:
    return
  for name, paper in (("excerpt_seconds", audio.PAPER_EXCERPT_SECONDS),
                      ("offset_seconds", 0.0)):
    value = getattr(front_end, name)
    if value != paper:
      raise errors.ConfigError(
          f"setting {name}={value:g}: {len(npz)} track(s) are read from"
          f" {SPECTROGRAM_DIR}/ (e.g. {npz[0]}), the authors' fixed 30 s"
          f" excerpts from the start, which cannot have it; leave {name} at"
          f" {paper:g}, or read audio files only with --option=audio=files")


@dataclasses.dataclass(frozen=True)
class Task:
  """One track's mel to make.

  Attributes:
    song_id: the track.
    path: its input file; None if it has none (`audio_missing`).
    kind: "audio" or "spectrograms": what `path` is.
    cache_dir: where its mel and status go (one directory per kind).
  """
  song_id: int
  path: str | None
  kind: str
  cache_dir: str = ""


def _entry(cache_dir: str, song_id: int, suffix: str) -> str:
  return os.path.join(cache_dir, f"{song_id}.{suffix}")


def _identity(path: str) -> dict:
  stat = os.stat(path)
  return {"path": os.path.abspath(path), "size": stat.st_size,
          "mtime_ns": stat.st_mtime_ns}


def cached_status(task: Task) -> dict | None:
  """The cached status of `task`, if it is still valid for its input."""
  try:
    with open(_entry(task.cache_dir, task.song_id, "json")) as f:
      status = json.load(f)
    # Entries written before statuses named their source sit in the
    # directory of their kind: that is their source.
    if (status.get("source", task.kind) != task.kind
        or status["file"] != _identity(task.path)):
      return None
    if (task.kind == "spectrograms"
        and status.get("npz_checks", 1) < NPZ_CHECKS):
      return None
  except (OSError, ValueError, KeyError):
    return None
  if status["status"] == OK and not os.path.exists(
      _entry(task.cache_dir, task.song_id, "npy")):
    return None
  return status


def _mel_of_npz(path: str, front_end: FrontEnd) -> np.ndarray:
  """The log-mel of an npz's mel power, checked in this order: readable,
  real floating point, the excerpt's shape, finite values >= 0 that
  float32 holds."""
  try:
    with np.load(path) as npz:
      power = npz["arr_0"]
  except ValueError as error:
    if "Object arrays" in str(error):
      # Loading objects would run the pickle's code: their dtype is enough.
      raise _Defect(SPECTROGRAM_WRONG_DTYPE, "arr_0 holds Python objects"
                    " (dtype object), not loaded; a mel power spectrogram is"
                    " real floating point") from None
    # np.load takes what is neither zip nor .npy for a pickle.
    message = ("not an .npz archive" if "pickled" in str(error)
               else str(error))
    raise _Defect(AUDIO_UNREADABLE, f"cannot read arr_0 ({message})") from None
  except (AttributeError, TypeError):  # np.load gave an array, not an npz
    raise _Defect(AUDIO_UNREADABLE, "cannot read arr_0 (an .npy array, not"
                  " an .npz archive)") from None
  except Exception as error:  # zip, key and OS errors of any kind
    raise _Defect(AUDIO_UNREADABLE, f"cannot read arr_0 ({error})") from None
  # Integers are refused too: no mel front end writes integer power, and
  # integer codes (8-bit image levels, quantised dB) would be read as power
  # without a word.
  if power.dtype.kind != "f":
    raise _Defect(SPECTROGRAM_WRONG_DTYPE,
                  f"arr_0 holds {power.dtype} values; a mel power spectrogram"
                  " is real floating point (float16, float32 or float64)")
  expected = (1, front_end.frames, audio.N_MELS)
  if power.shape != expected:
    raise _Defect(SPECTROGRAM_WRONG_SHAPE,
                  f"arr_0 has shape {power.shape}, expected {expected}")
  if not np.all(np.isfinite(power)) or np.any(power < 0):
    raise _Defect(SPECTROGRAM_INVALID, "arr_0 holds negative or non-finite"
                  " values (NaN or infinite); a mel power spectrogram is"
                  " finite and >= 0")
  # float64 values beyond float32 (1e300) pass the check above and become
  # inf in the float32 mel: refuse them rather than store inf.
  with np.errstate(over="ignore", invalid="ignore"):
    mel = np.log1p(audio.COMPRESSION * power[0].astype(np.float32))
  if not np.all(np.isfinite(mel)):
    raise _Defect(SPECTROGRAM_INVALID, "arr_0 holds values too large for a"
                  f" mel power spectrogram (up to {np.max(power):.3g}; float32"
                  f" holds {np.finfo(np.float32).max:.3g})")
  return mel


class _Defect(Exception):

  def __init__(self, reason: str, message: str):
    super().__init__(message)
    self.reason = reason


# The one capture every decode path uses (ctxtag.audio's), by its old name.
captured_stderr = audio.captured_notes


def _decoded(task: Task, front_end: FrontEnd) -> tuple[np.ndarray, float]:
  try:
    return audio.excerpt_from_file(
        task.path, front_end.excerpt_seconds, front_end.offset_seconds,
        front_end.max_padding_seconds)
  except audio.AudioTooShortError as error:
    raise _Defect(AUDIO_TOO_SHORT, str(error)) from None
  except audio.NotAFileError as error:
    raise _Defect(AUDIO_NOT_A_FILE, str(error)) from None
  except audio.AudioError as error:
    raise _Defect(AUDIO_UNREADABLE, str(error)) from None


def extract(task: Task, front_end: FrontEnd) -> dict:
  """Computes and caches the mel of one track; returns its status.

  Status: {"song_id", "status": "ok" or a defect reason, "message",
  "padded_seconds", "source": the input's kind, "file": identity of the
  input file, and "decoder_notes": what the decoder wrote to stderr, if
  anything}.
  """
  if task.path is None:
    return {"song_id": task.song_id, "status": AUDIO_MISSING,
            "message": f"no {AUDIO_DIR}/<id>.<ext> nor"
                       f" {SPECTROGRAM_DIR}/mels<id>.npz",
            "padded_seconds": 0.0}
  why = audio.not_a_file(task.path)
  if why is None:
    try:
      identity = _identity(task.path)
    except OSError as error:  # gone since it was listed
      why = error.strerror or "cannot be read"
  if why is not None:
    # Not cached: there is nothing to recognise it by, and it costs a stat.
    return {"song_id": task.song_id, "status": AUDIO_NOT_A_FILE,
            "message": why, "padded_seconds": 0.0,
            "source": task.kind,
            "file": {"path": os.path.abspath(task.path)}}
  cached = cached_status(task)
  if cached is not None:
    return cached
  status = {"song_id": task.song_id, "status": OK, "message": "",
            "padded_seconds": 0.0, "source": task.kind, "file": identity}
  if task.kind == "spectrograms":
    status["npz_checks"] = NPZ_CHECKS
  notes = []
  try:
    with audio.captured_notes() as notes:
      if task.kind == "spectrograms":
        mel, padded = _mel_of_npz(task.path, front_end), 0.0
      else:
        mel, padded = _decoded(task, front_end)
    with files.atomic_open(_entry(task.cache_dir, task.song_id, "npy"),
                           "wb") as f:
      np.save(f, mel.astype(np.float16))
    status["padded_seconds"] = padded
  except _Defect as defect:
    status.update(status=defect.reason, message=str(defect))
  text = "".join(notes).strip()
  if text:
    status["decoder_notes"] = text[:MAX_NOTE_CHARS]
  files.write_json(_entry(task.cache_dir, task.song_id, "json"), status)
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
    if not done:  # no rate yet: the first decodes also compile librosa's code
      print(f"audio: 0/{self.total} tracks, starting", file=sys.stderr,
            flush=True)
      return
    rate = done / max(now - self.start, 1e-9)
    eta = (self.total - done) / rate
    print(f"audio: {done}/{self.total} tracks, {rate:.1f} tracks/s,"
          f" ETA {eta // 60:.0f}:{eta % 60:02.0f}", file=sys.stderr,
          flush=True)


def _jax_started() -> bool:
  if "jax" not in sys.modules:
    return False
  try:
    from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top
    return xla_bridge.backends_are_initialized()
  except (ImportError, AttributeError):  # private API: assume the worst
    return True


def worker_pool(workers: int, initializer=None, initargs=()):
  """A process pool for front-end work.

  Forked workers inherit the imported front end (librosa and scipy take
  seconds to import in a fresh process), but forking a process whose JAX
  runtime has started risks a deadlock; then the workers are spawned.
  `initializer(*initargs)` runs in each worker first (multiprocessing.Pool's).

  Each worker's BLAS and OpenMP pools get one thread: the pool already
  has a process per core, and a forked worker keeps its parent's pool
  size, so a 2-core machine ran four BLAS threads on two cores (the
  simulated build's rendering took 2.5x as long).
  """
  if sys.platform == "linux" and not _jax_started():
    context = multiprocessing.get_context("fork")
    audio.log_mel(np.zeros(audio.SAMPLE_RATE, np.float32), excerpt_seconds=1)
  else:
    context = multiprocessing.get_context("spawn")
  return context.Pool(workers, _start_worker, (initializer, initargs))


def _start_worker(initializer, initargs) -> None:
  threadpoolctl.threadpool_limits(1)
  if initializer is not None:
    initializer(*initargs)


def extract_all(tasks: list[Task], front_end: FrontEnd, workers: int,
                beam_options=None) -> dict[int, dict]:
  """Mels of every task into its cache dir; returns song id -> status.

  Args:
    tasks: one per track.
    front_end: the excerpt settings.
    workers: worker processes; 1 computes in this process.
    beam_options: Apache Beam PipelineOptions to run the extraction as a
      Beam pipeline instead of a process pool (None: no Beam).
  """
  for cache_dir in sorted({task.cache_dir for task in tasks
                           if task.path is not None}):
    os.makedirs(cache_dir, exist_ok=True)
  work = functools.partial(extract, front_end=front_end)
  if beam_options is not None:
    return _extract_with_beam(tasks, work, beam_options)
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


def _extract_with_beam(tasks, work, beam_options):
  import apache_beam as beam  # pylint: disable=g-import-not-at-top
  with beam.Pipeline(options=beam_options) as pipeline:
    _ = (pipeline | "Tracks" >> beam.Create(tasks)
         | "Mels" >> beam.Map(work))
  statuses = {}
  for task in tasks:
    if task.path is None:
      statuses[task.song_id] = work(task)
      continue
    status = cached_status(task)
    if status is None:
      raise RuntimeError(f"the Beam pipeline left no status for song"
                         f" {task.song_id} in {task.cache_dir}")
    statuses[task.song_id] = status
  return statuses
