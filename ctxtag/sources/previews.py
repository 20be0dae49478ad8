"""Fetching the 30 s audio previews of the paper's release from Deezer.

The release (Zenodo record 3961560) names its tracks by Deezer song id but
holds no audio. `fetch` asks the Deezer API for each track's preview URL
(`GET {api_url}/track/{id}`) and downloads the preview into
MANUAL_DIR/audio/<song_id>.mp3, where the zenodo build reads it
(ctxtag.sources.zenodo).

The API allows 50 requests in any 5 s and answers error code 4 beyond that.
Every API request takes a slot of one limiter shared by all workers; the
slot is held from before the request is sent until a whole window after
its answer came back, so however late a request reaches the server, the
server never sees more than the limit in any window. The previews come from
a CDN without that quota, so their downloads are not limited.

A preview is written under a temporary name beside its final one and
renamed once whole, so a killed fetch leaves only whole files; a rerun
skips every track that has a file in any supported format, without asking
the API, and fetches only the others. What became of each track is counted
in MANUAL_DIR/fetch_report.json.
"""

import collections
import contextlib
import json
import os
import queue
import random
import re
import sys
import threading
import time

import requests
from requests import adapters

from ctxtag import errors
from ctxtag import files
from ctxtag.sources import csv_files
from ctxtag.sources import mels
from ctxtag.sources import zenodo

API_URL = "https://api.deezer.com"
MAX_REQUESTS_PER_WINDOW = 50
WINDOW_SECONDS = 5.0
REPORT_FILE = "fetch_report.json"
PREVIEW_EXTENSION = "mp3"
EXAMPLES = 5  # ids listed under each reason of the report

# Why a track has no preview to fetch (not an error: the build counts these
# tracks as audio_missing).
NO_SUCH_TRACK = "no_such_track"  # API error 800, "no data"
NO_PREVIEW = "no_preview"  # the track's preview URL is ""
NOT_READABLE = "not_readable"  # the track is not readable (e.g. withdrawn)

# Deezer API error codes.
_QUOTA_EXCEEDED = 4
_SERVICE_BUSY = 700
_NO_DATA = 800

# Connection failures, before the API ever answered, that mean it cannot be
# reached at all: more than one, so one lost packet does not end a run.
_UNREACHABLE_AFTER = 3
_MAX_BACKOFF_SECONDS = 60.0
_CHUNK_BYTES = 1 << 16
# How long an interrupted fetch waits for its workers to finish or delete
# their temporary files, before deleting what is left itself.
_STOP_GRACE_SECONDS = 2.0
# files.atomic_open's temporary names of previews: ".<id>.mp3.<random>.tmp".
_TEMPORARY_NAME = re.compile(r"^\.-?\d+\.\w+\..+\.tmp$")


class FetchError(errors.UserError):
  """A fetch that cannot start, or that ended with tracks not fetched."""


class ApiUnreachableError(FetchError):
  """The API did not answer a single request."""


class Stopped(Exception):
  """The fetch was stopped (interrupted, or aborted by another worker)."""


class SlidingWindowLimiter:
  """At most `max_requests` requests in any `window_seconds`, across threads.

  A request holds its slot from `slot()` until `window_seconds` after it
  returns, so the limit holds at the server whatever the network delays:
  the server receives each request between those two moments.
  """

  def __init__(self, max_requests: int,
               window_seconds: float = WINDOW_SECONDS, clock=time.monotonic):
    """Args:
      max_requests: requests allowed in any window.
      window_seconds: the window's length.
      clock: monotonic seconds (tests pass a fake one).
    """
    if max_requests < 1 or not window_seconds > 0:
      raise ValueError(f"need max_requests >= 1 and window_seconds > 0, got"
                       f" {max_requests} and {window_seconds}")
    self.max_requests = max_requests
    self.window_seconds = window_seconds
    self._clock = clock
    self._condition = threading.Condition()
    self._finished = collections.deque()  # end times, ascending
    self._in_flight = 0
    self._paused_until = float("-inf")

  @contextlib.contextmanager
  def slot(self, stop: threading.Event | None = None):
    """Waits for a free slot, holds it for the `with` block and a window.

    Args:
      stop: when set while waiting, raises Stopped.
    """
    self._acquire(stop)
    try:
      yield
    finally:
      with self._condition:
        self._in_flight -= 1
        self._finished.append(self._clock())
        self._condition.notify_all()

  def pause(self, seconds: float) -> None:
    """No request starts for `seconds` (the server said the quota is
    exceeded: someone else is using it too)."""
    with self._condition:
      self._paused_until = max(self._paused_until, self._clock() + seconds)

  def _acquire(self, stop: threading.Event | None) -> None:
    with self._condition:
      while True:
        if stop is not None and stop.is_set():
          raise Stopped()
        now = self._clock()
        while (self._finished
               and self._finished[0] + self.window_seconds <= now):
          self._finished.popleft()
        full = self._in_flight + len(self._finished) >= self.max_requests
        if not full and now >= self._paused_until:
          self._in_flight += 1
          return
        wake = [self._paused_until] if now < self._paused_until else []
        if full and self._finished:
          wake.append(self._finished[0] + self.window_seconds)
        # Short waits: a stop must be noticed though no one notifies.
        timeout = min([w - now for w in wake] + [0.2])
        self._condition.wait(max(timeout, 0.001))


class _Retry(Exception):
  """A transient failure: try again after a backoff (or at once)."""

  def __init__(self, reason: str, backoff: bool = True):
    super().__init__(reason)
    self.reason, self.backoff = reason, backoff


class _Failed(Exception):
  """A failure that retrying will not fix."""

  def __init__(self, reason: str):
    super().__init__(reason)
    self.reason = reason


class _Unavailable(Exception):
  """The track has no preview to fetch."""

  def __init__(self, reason: str):
    super().__init__(reason)
    self.reason = reason


def _why(error: Exception) -> str:
  """The operating system's words inside a requests error, if any."""
  found = re.search(r"\[Errno -?\d+\] ([^'\")]+)", str(error))
  return found.group(1).strip() if found else type(error).__name__


class _Reachability:
  """Whether the API ever answered; aborts after repeated connection
  failures before the first answer."""

  def __init__(self, api_url: str, abort):
    self._api_url, self._abort = api_url, abort
    self._lock = threading.Lock()
    self._answered = False
    self._failures = 0

  def answered(self) -> None:
    self._answered = True

  def connection_failed(self, error: Exception) -> None:
    with self._lock:
      if self._answered:
        return
      self._failures += 1
      if self._failures >= _UNREACHABLE_AFTER:
        self._abort(ApiUnreachableError(
            f"cannot reach the API at {self._api_url} ({_why(error)});"
            " check the network, or --api_url"))


class _Client:
  """The API requests and the preview downloads of one fetch."""

  def __init__(self, api_url: str, limiter: SlidingWindowLimiter,
               timeout_seconds: float, reachability: _Reachability,
               stop: threading.Event, pool_size: int):
    self._api_url = api_url.rstrip("/")
    self._limiter = limiter
    self._timeout = timeout_seconds
    self._reachability = reachability
    self._stop = stop
    self._pool_size = pool_size
    self._local = threading.local()

  def _session(self) -> requests.Session:
    # A session per thread: requests does not promise that one is
    # thread-safe. Retries are ours (the API's errors come as HTTP 200).
    session = getattr(self._local, "session", None)
    if session is None:
      session = requests.Session()
      adapter = adapters.HTTPAdapter(max_retries=0,
                                     pool_maxsize=self._pool_size)
      session.mount("http://", adapter)
      session.mount("https://", adapter)
      self._local.session = session
    return session

  def preview_url(self, song_id: int) -> str:
    """The track's preview URL, from one API request.

    Raises:
      _Unavailable: the track has no preview.
      _Retry, _Failed: the request failed, transiently or not.
    """
    try:
      with self._limiter.slot(self._stop):
        response = self._session().get(f"{self._api_url}/track/{song_id}",
                                       timeout=self._timeout)
        body = response.content  # read within the slot: it is the request
    except requests.exceptions.ReadTimeout:
      raise _Retry("api_timeout") from None
    except requests.exceptions.ConnectionError as error:
      self._reachability.connection_failed(error)
      raise _Retry("api_connection_error") from None
    except requests.exceptions.RequestException:
      raise _Retry("api_connection_error") from None
    self._reachability.answered()
    status = response.status_code
    if status == 429 or status >= 500:
      raise _Retry(f"api_http_{status}")
    if status != 200:
      raise _Failed(f"api_http_{status}")
    try:
      answer = json.loads(body)
    except ValueError:
      answer = None
    if not isinstance(answer, dict):
      raise _Retry("api_bad_answer")
    if "error" in answer:
      error = answer["error"]
      code = error.get("code") if isinstance(error, dict) else None
      if code == _QUOTA_EXCEEDED:
        # Someone else shares the quota: let every worker wait a window.
        self._limiter.pause(self._limiter.window_seconds)
        raise _Retry("api_quota_exceeded", backoff=False)
      if code == _SERVICE_BUSY:
        raise _Retry("api_busy")
      if code == _NO_DATA:
        raise _Unavailable(NO_SUCH_TRACK)
      raise _Failed(f"api_error_{code}")
    if answer.get("readable") is False:
      raise _Unavailable(NOT_READABLE)
    preview = answer.get("preview")
    if preview == "":
      raise _Unavailable(NO_PREVIEW)
    if not isinstance(preview, str):
      raise _Retry("api_bad_answer")
    return preview

  def _receive(self, response: requests.Response, f) -> int:
    """Writes the body into `f`; returns its length in bytes."""
    received = 0
    chunks = response.iter_content(_CHUNK_BYTES)
    while True:
      # requests' errors are OSErrors, which atomic_open would take for
      # the disk's: they become _Retry here, beside the read.
      try:
        chunk = next(chunks, None)
      except (requests.exceptions.ChunkedEncodingError,
              requests.exceptions.ContentDecodingError,
              requests.exceptions.ConnectionError):  # cut, or stalled
        raise _Retry("preview_incomplete") from None
      if chunk is None:
        return received
      if self._stop.is_set():
        raise Stopped()
      f.write(chunk)
      received += len(chunk)

  def download(self, url: str, path: str) -> None:
    """Downloads `url` into `path`, which appears only once whole.

    Raises:
      _Retry, _Failed: the download failed, transiently or not.
      Stopped: the fetch stopped meanwhile.
      files.WriteError: `path` cannot be written.
    """
    try:
      with self._session().get(url, stream=True,
                               timeout=self._timeout) as response:
        status = response.status_code
        if status == 429 or status >= 500:
          raise _Retry(f"preview_http_{status}")
        if status != 200:
          raise _Failed(f"preview_http_{status}")
        length = response.headers.get("Content-Length")
        encoded = response.headers.get("Content-Encoding")
        with files.atomic_open(path, "wb") as f:
          received = self._receive(response, f)
          # urllib3 raises on a short body too; this is in case it did not.
          if (length is not None and not encoded and length.isdigit()
              and received < int(length)):
            raise _Retry("preview_incomplete")
          if received == 0:
            raise _Retry("preview_empty")
    except requests.exceptions.ReadTimeout:
      raise _Retry("preview_timeout") from None
    except requests.exceptions.ConnectionError:
      raise _Retry("preview_connection_error") from None
    except requests.exceptions.RequestException:
      raise _Failed("preview_bad_url") from None


class _Progress:
  """One line on stderr every few seconds: done, rate and ETA."""

  def __init__(self, total: int, every_seconds: float, stream):
    self.total, self.every, self.stream = total, every_seconds, stream
    self.start = self.last = time.monotonic()

  def update(self, done: int, final: bool = False) -> None:
    now = time.monotonic()
    if not final and now - self.last < self.every:
      return
    self.last = now
    rate = done / max(now - self.start, 1e-9)
    eta = (self.total - done) / rate if rate > 0 else float("nan")
    eta_text = (f"{int(eta // 3600)}:{int(eta % 3600 // 60):02d}:"
                f"{int(eta % 60):02d}" if eta == eta else "?")
    print(f"previews: {done}/{self.total} done, {rate:.1f} previews/s,"
          f" ETA {eta_text}", file=self.stream, flush=True)


def read_song_ids(path: str) -> list[int]:
  """Song ids from a text file, one a line (blank lines skipped).

  Args:
    path: the file.

  Returns:
    The ids, each once, in file order.

  Raises:
    FetchError: naming the file (and line) when it is missing or a line is
      not an integer id.
  """
  if not os.path.isfile(path):
    raise FetchError(f"{path}: no such file")
  ids = {}
  with open(path, encoding="utf-8-sig") as f:
    for line, text in enumerate(f, start=1):
      if not text.strip():
        continue
      try:
        ids[csv_files.parse_id(text)] = None
      except ValueError:
        raise FetchError(f"{path}: line {line}: {text.strip()!r} is not an"
                         " integer song id") from None
  return list(ids)


def release_song_ids(manual_dir: str) -> list[int]:
  """The song ids of the release's three split CSVs in `manual_dir`.

  Args:
    manual_dir: holds train_set.csv, validation_set.csv and test_set.csv.

  Returns:
    Every id once, in the order of first appearance (train, validation,
    test).

  Raises:
    csv_files.CsvError: naming the file (and line) when a CSV is missing,
      has no song_id column, or a song_id is not an integer.
  """
  ids = {}
  for name in zenodo.SPLIT_FILES.values():
    path = os.path.join(manual_dir, name)
    with csv_files.open_csv(path) as (rows, header):
      [column] = csv_files.require_columns(path, header, ["song_id"])
      for line, row in rows:
        text = row[column] if column < len(row) else ""
        try:
          ids[csv_files.parse_id(text)] = None
        except ValueError:
          raise csv_files.CsvError(f"{path}: line {line}: song_id {text!r}"
                                   " is not an integer id") from None
  return list(ids)


def _remove_temporary_files(audio_dir: str) -> None:
  """Deletes what killed fetches left half-written."""
  for name in os.listdir(audio_dir):
    if _TEMPORARY_NAME.match(name):
      with contextlib.suppress(FileNotFoundError):
        os.remove(os.path.join(audio_dir, name))


def _add(report_part: dict, reason: str, song_id: int) -> None:
  entry = report_part.setdefault(reason, {"count": 0, "examples": []})
  entry["count"] += 1
  if len(entry["examples"]) < EXAMPLES:
    entry["examples"].append(song_id)


def _report(song_ids: list[int], present: set[int],
            outcomes: dict[int, tuple[str, str]]) -> dict:
  report = {"requested": len(song_ids), "present_before": 0, "downloaded": 0,
            "unavailable": {}, "failed": {}}
  for song_id in song_ids:  # request order: the examples are the first ids
    if song_id in present:
      report["present_before"] += 1
      continue
    outcome, reason = outcomes[song_id]
    if outcome == "downloaded":
      report["downloaded"] += 1
    else:
      _add(report[outcome], reason, song_id)
  for part in ("unavailable", "failed"):
    report[part] = dict(sorted(report[part].items()))
  return report


def _check_arguments(manual_dir, api_url, workers, max_requests_per_window,
                     retries, window_seconds) -> None:
  if not os.path.isdir(manual_dir):
    raise FetchError(f"{manual_dir}: no such directory (--manual_dir)")
  if not re.match(r"^https?://[^/]", api_url):
    raise FetchError(f"--api_url must be an http:// or https:// URL, got"
                     f" {api_url!r}")
  for name, value in (("workers", workers),
                      ("max_requests_per_window", max_requests_per_window)):
    if value < 1:
      raise FetchError(f"{name} must be >= 1, got {value}")
  if retries < 0 or not window_seconds > 0:
    raise FetchError(f"need retries >= 0 and window_seconds > 0, got"
                     f" {retries} and {window_seconds}")


def _fetch_track(client: "_Client", song_id: int, path: str, retries: int,
                 backoff_seconds: float, stop: threading.Event
                 ) -> tuple[str, str]:
  """One track's preview into `path`, retrying transient failures.

  Returns:
    ("downloaded", ""), or ("unavailable" | "failed", reason).

  Raises:
    Stopped: `stop` was set while waiting to retry.
  """
  url, attempt = None, 0
  while True:
    try:
      if url is None:
        url = client.preview_url(song_id)
      client.download(url, path)
      return "downloaded", ""
    except _Unavailable as unavailable:
      return "unavailable", unavailable.reason
    except _Failed as failed:
      return "failed", failed.reason
    except _Retry as retry:
      attempt += 1
      if attempt > retries:
        return "failed", retry.reason
      delay = 0.0
      if retry.backoff:
        delay = min(backoff_seconds * 2 ** (attempt - 1),
                    _MAX_BACKOFF_SECONDS) * random.uniform(0.5, 1.5)
      if stop.wait(delay):
        raise Stopped() from None


def fetch(manual_dir: str, song_ids: list[int], api_url: str = API_URL,
          workers: int = 8,
          max_requests_per_window: int = MAX_REQUESTS_PER_WINDOW,
          retries: int = 5, window_seconds: float = WINDOW_SECONDS,
          timeout_seconds: float = 30.0, backoff_seconds: float = 1.0,
          progress_seconds: float = 5.0, progress_stream=None) -> dict:
  """Fetches the preview of every track that has no audio file yet.

  Args:
    manual_dir: the release's manual dir; previews go to its audio/.
    song_ids: the tracks (Deezer song ids).
    api_url: the Deezer API, or a mirror of it.
    workers: threads fetching at once.
    max_requests_per_window: API requests allowed in any `window_seconds`.
    retries: tries after the first of a transient failure (quota exceeded,
      service busy, HTTP 429 and 5xx, time-outs, lost connections, cut
      downloads), each after an exponential backoff with jitter.
    window_seconds: the API quota's window.
    timeout_seconds: how long to wait to connect, and between bytes.
    backoff_seconds: the first retry's backoff; it doubles each retry.
    progress_seconds: seconds between progress lines.
    progress_stream: where progress lines go (default: stderr).

  Returns:
    The report, also written to MANUAL_DIR/fetch_report.json:
    {"requested", "present_before", "downloaded", "unavailable": {reason:
    {"count", "examples"}}, "failed": {reason: {"count", "examples"}}}.

  Raises:
    FetchError: a bad argument.
    ApiUnreachableError: the API never answered.
    files.WriteError: a preview or the report cannot be written.
    KeyboardInterrupt: interrupted; no partial file is left under a final
      name, and a rerun resumes.
  """
  _check_arguments(manual_dir, api_url, workers, max_requests_per_window,
                   retries, window_seconds)
  song_ids = list(dict.fromkeys(song_ids))
  audio_dir = os.path.join(manual_dir, mels.AUDIO_DIR)
  try:
    os.makedirs(audio_dir, exist_ok=True)
  except OSError as error:
    raise files.WriteError(f"{audio_dir}: cannot create ({error.strerror})"
                           ) from error
  _remove_temporary_files(audio_dir)
  have = mels.index_files(manual_dir, "audio")
  present = {song_id for song_id in song_ids if str(song_id) in have}
  to_fetch = [song_id for song_id in song_ids if song_id not in present]

  stop = threading.Event()
  aborted = []  # the error that stopped every worker, if any

  def abort(error: BaseException) -> None:
    if not aborted:
      aborted.append(error)
    stop.set()

  limiter = SlidingWindowLimiter(max_requests_per_window, window_seconds)
  client = _Client(api_url, limiter, timeout_seconds,
                   _Reachability(api_url, abort), stop, pool_size=workers)
  outcomes = {}
  outcomes_lock = threading.Lock()
  work = queue.SimpleQueue()
  for song_id in to_fetch:
    work.put(song_id)

  def worker() -> None:
    try:
      while not stop.is_set():
        try:
          song_id = work.get_nowait()
        except queue.Empty:
          return
        outcome = _fetch_track(
            client, song_id,
            os.path.join(audio_dir, f"{song_id}.{PREVIEW_EXTENSION}"),
            retries, backoff_seconds, stop)
        with outcomes_lock:
          outcomes[song_id] = outcome
    except Stopped:
      pass
    except BaseException as error:  # pylint: disable=broad-except
      abort(error)  # a full disk, or a bug: the main thread raises it

  progress = _Progress(len(to_fetch), progress_seconds,
                       progress_stream or sys.stderr)
  threads = [threading.Thread(target=worker, name=f"fetch-{i}", daemon=True)
             for i in range(min(workers, len(to_fetch)))]
  try:
    for thread in threads:
      thread.start()
    for thread in threads:
      while thread.is_alive():
        thread.join(timeout=0.2)
        progress.update(len(outcomes))
  except BaseException:
    stop.set()
    deadline = time.monotonic() + _STOP_GRACE_SECONDS
    for thread in threads:
      thread.join(timeout=max(deadline - time.monotonic(), 0))
    # A worker still waiting for bytes leaves its file; a worker that
    # finishes later finds it gone and renames nothing.
    with contextlib.suppress(OSError):
      _remove_temporary_files(audio_dir)
    raise
  if aborted:
    raise aborted[0]
  if to_fetch:
    progress.update(len(outcomes), final=True)
  report = _report(song_ids, present, outcomes)
  files.write_json(os.path.join(manual_dir, REPORT_FILE), report)
  return report


def fetch_previews(manual_dir: str, song_ids_file: str | None = None,
                   **options) -> dict:
  """Fetches the previews of the release in `manual_dir` (or of a list).

  Args:
    manual_dir: the release's manual dir.
    song_ids_file: a file of song ids, one a line, to fetch instead of the
      ids of the release's CSVs.
    **options: `fetch`'s other arguments.

  Returns:
    `fetch`'s report.

  Raises:
    FetchError, csv_files.CsvError: naming the missing directory, or the
      file and line of bad input.
    What `fetch` raises.
  """
  if not os.path.isdir(manual_dir):
    raise FetchError(f"{manual_dir}: no such directory (--manual_dir)")
  song_ids = (read_song_ids(song_ids_file) if song_ids_file
              else release_song_ids(manual_dir))
  return fetch(manual_dir, song_ids, **options)


def summary(report: dict) -> str:
  """The report in one line."""
  def reasons(part: dict) -> str:
    return ", ".join(f"{reason} {entry['count']}"
                     for reason, entry in part.items())
  unavailable = sum(e["count"] for e in report["unavailable"].values())
  failed = sum(e["count"] for e in report["failed"].values())
  text = (f"{report['requested']} tracks: {report['downloaded']} downloaded,"
          f" {report['present_before']} present before, {unavailable}"
          " unavailable")
  if unavailable:
    text += f" ({reasons(report['unavailable'])})"
  text += f", {failed} failed"
  if failed:
    text += f" ({reasons(report['failed'])})"
  return text
