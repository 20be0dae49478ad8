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
renamed only once it is whole and checked: its content type, its size
(refused beyond a bound far above what a 30 s preview can be, and when
empty) and that it decodes, as the build decodes it, to a preview's length.
So a killed fetch, an HTML page or a stream of zeros never leaves a file
under a final name; a rerun skips every track that has a file in any
supported format, without asking the API, and fetches only the others. What
became of each track is counted in MANUAL_DIR/fetch_report.json.

A fetch holds MANUAL_DIR/.fetch.lock (ctxtag.locks) while it runs: a second
one into the same folder would delete the first one's temporary files at
its start and spend the quota on the same ids.
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
from urllib import parse

import requests
from requests import adapters

from ctxtag import audio
from ctxtag import errors
from ctxtag import files
from ctxtag import locks
from ctxtag.sources import csv_files
from ctxtag.sources import mels
from ctxtag.sources import zenodo

API_URL = "https://api.deezer.com"
MAX_REQUESTS_PER_WINDOW = 50
WINDOW_SECONDS = 5.0
REPORT_FILE = "fetch_report.json"
PREVIEW_EXTENSION = "mp3"
EXAMPLES = 5  # ids listed under each reason of the report
FETCH_LOCK = ".fetch.lock"
FETCH_RULE = "one fetch at a time per manual dir"
# A 30 s preview is about 0.5 MB of MP3; ten times that is no preview.
MAX_PREVIEW_BYTES = 5_000_000
# Deezer's previews are 30 s; one under a third of that was cut short.
MIN_PREVIEW_SECONDS = 10.0
TIMEOUT_SECONDS = 30.0

# Why a track has no preview to fetch (not an error: the build counts these
# tracks as audio_missing).
NO_SUCH_TRACK = "no_such_track"  # API error 800, "no data"
NO_PREVIEW = "no_preview"  # the track's preview URL is ""
NOT_READABLE = "not_readable"  # the track is not readable (e.g. withdrawn)

# Why a downloaded preview was refused (failed, after the retries).
PREVIEW_NOT_AUDIO = "preview_not_audio"  # a Content-Type of no audio
PREVIEW_TOO_LARGE = "preview_too_large"  # beyond max_preview_bytes
PREVIEW_EMPTY = "preview_empty"
PREVIEW_UNDECODABLE = "preview_undecodable"
PREVIEW_TOO_SHORT = "preview_too_short"  # under min_preview_seconds
# Content types a preview may come with; none at all is left to the decode.
_AUDIO_TYPES = re.compile(r"^(audio/[\w.+-]+|application/octet-stream)$")

# A CSV row whose song_id is not a positive ASCII integer (counted, not
# fetched).
BAD_SONG_ID = "bad_song_id"

# Deezer API error codes.
_QUOTA_EXCEEDED = 4
_SERVICE_BUSY = 700
_NO_DATA = 800

# Requests in a row that got no answer at all (refused, timed out, cut
# before the headers) before a host ever answered: it cannot be reached.
# More than one, so one lost packet does not end a fetch.
_UNREACHABLE_AFTER = 3
# Once it has answered, per worker: every worker's track failing twice,
# its retry included, is a host that stopped answering, not a slow request.
_SILENT_AFTER_PER_WORKER = 2
_MAX_BACKOFF_SECONDS = 60.0
_CHUNK_BYTES = 1 << 16
# How long an interrupted fetch waits for its workers to finish or delete
# their temporary files, before deleting what is left itself.
_STOP_GRACE_SECONDS = 2.0
# files.temporary_beside's names of previews: ".<id>.mp3.<random>.tmp".
_TEMPORARY_NAME = re.compile(r"^\.-?\d+\.\w+\..+\.tmp$")


class FetchError(errors.UserError):
  """A fetch that cannot start, or that ended with tracks not fetched."""


class HostUnreachableError(FetchError):
  """A host (the API, or the previews') answers nothing, or stopped
  answering."""


class ApiUnreachableError(HostUnreachableError):
  """The API answers nothing, or stopped answering."""


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


def _base(url: str) -> str:
  """scheme://host[:port] of `url`, to name a host."""
  try:
    parts = parse.urlsplit(url)
  except ValueError:
    return url
  return f"{parts.scheme}://{parts.netloc}"


class _Reachability:
  """Ends the fetch when a host answers nothing: after `_UNREACHABLE_AFTER`
  requests in a row without an answer before its first answer, or
  `silent_after` in a row at any later time (across all workers: an answer
  to any of them starts the count again)."""

  def __init__(self, what: str, hint: str, abort, silent_after: int,
               error_type: type = HostUnreachableError):
    """Args:
      what: the host, as messages name it ("the API", "the preview host").
      hint: what the user may check, ending the message.
      abort: called with the error that ends the fetch.
      silent_after: failures in a row, once it answered, that end it.
      error_type: the error's class.
    """
    self._what, self._hint, self._abort = what, hint, abort
    self._silent_after = max(silent_after, _UNREACHABLE_AFTER)
    self._error_type = error_type
    self._lock = threading.Lock()
    self._answered = False
    self._failures = 0

  def answered(self) -> None:
    with self._lock:
      self._answered = True
      self._failures = 0

  def failed(self, url: str, why: str) -> None:
    """A request to `url` got no answer at all, for the reason `why`."""
    with self._lock:
      self._failures += 1
      if not self._answered and self._failures >= _UNREACHABLE_AFTER:
        error = self._error_type(
            f"cannot reach {self._what} at {_base(url)} ({why}); check the"
            f" network, or {self._hint}")
      elif self._answered and self._failures >= self._silent_after:
        error = self._error_type(
            f"{self._what} at {_base(url)} stopped answering"
            f" ({self._failures} requests in a row got no answer, the last:"
            f" {why}); rerun the same command to resume once it answers")
      else:
        return
    self._abort(error)


class _Client:
  """The API requests and the preview downloads of one fetch."""

  def __init__(self, api_url: str, limiter: SlidingWindowLimiter,
               timeout_seconds: float, api: _Reachability,
               preview_host: _Reachability, stop: threading.Event,
               pool_size: int, max_preview_bytes: int,
               min_preview_seconds: float):
    self._api_url = api_url.rstrip("/")
    self._limiter = limiter
    self._timeout = timeout_seconds
    self._api, self._preview_host = api, preview_host
    self._stop = stop
    self._pool_size = pool_size
    self._max_bytes = max_preview_bytes
    self._min_seconds = min_preview_seconds
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

  def _no_answer(self, error: Exception) -> str:
    if isinstance(error, requests.exceptions.Timeout):
      return f"no answer within {self._timeout:g} s"
    return _why(error)

  def preview_url(self, song_id: int) -> str:
    """The track's preview URL, from one API request.

    Raises:
      _Unavailable: the track has no preview.
      _Retry, _Failed: the request failed, transiently or not.
    """
    url = f"{self._api_url}/track/{song_id}"
    try:
      with self._limiter.slot(self._stop):
        response = self._session().get(url, timeout=self._timeout)
        body = response.content  # read within the slot: it is the request
    except (requests.exceptions.Timeout,
            requests.exceptions.ConnectionError) as error:
      self._api.failed(url, self._no_answer(error))
      timed_out = isinstance(error, requests.exceptions.ReadTimeout)
      raise _Retry("api_timeout" if timed_out else "api_connection_error"
                   ) from None
    except requests.exceptions.RequestException:
      raise _Retry("api_connection_error") from None
    self._api.answered()
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

  def _check_headers(self, response: requests.Response) -> None:
    """Refuses, before any byte of the body, what cannot be a preview."""
    content_type = response.headers.get("Content-Type")
    if content_type is not None and not _AUDIO_TYPES.match(
        content_type.partition(";")[0].strip().lower()):
      raise _Retry(PREVIEW_NOT_AUDIO)
    length = response.headers.get("Content-Length", "").strip()
    if length.isdigit() and not response.headers.get("Content-Encoding"):
      if int(length) > self._max_bytes:
        raise _Retry(PREVIEW_TOO_LARGE)
      if int(length) == 0:
        raise _Retry(PREVIEW_EMPTY)

  def _receive(self, response: requests.Response, f) -> int:
    """Writes the body into `f`, up to the size bound; returns its length
    in bytes."""
    received = 0
    chunks = response.iter_content(_CHUNK_BYTES)
    while True:
      # requests' errors are OSErrors, which the caller would take for the
      # disk's: they become _Retry here, beside the read.
      try:
        chunk = next(chunks, None)
      except requests.exceptions.RequestException:  # cut, or stalled
        raise _Retry("preview_incomplete") from None
      if chunk is None:
        return received
      if self._stop.is_set():
        raise Stopped()
      received += len(chunk)
      # Counted as decoded, so a small gzip body that inflates to gigabytes
      # stops here too; the connection is dropped, not drained.
      if received > self._max_bytes:
        raise _Retry(PREVIEW_TOO_LARGE)
      f.write(chunk)

  def _check_audio(self, path: str) -> None:
    """Refuses a file that does not decode, as the build decodes it, to at
    least `min_preview_seconds` of audio."""
    # Only what the check needs is decoded: the decode holds the process's
    # stderr, so the workers take turns.
    seconds = max(self._min_seconds, audio.MIN_EXCERPT_SECONDS)
    try:
      # The decoders' notes on a broken file ("Trying to resync...") are
      # this check's business, not the terminal's.
      with mels.captured_stderr():
        samples = audio.read_excerpt(path, seconds)
    except (audio.AudioError, RuntimeError, ValueError):
      raise _Retry(PREVIEW_UNDECODABLE) from None
    if samples.shape[0] < self._min_seconds * audio.SAMPLE_RATE:
      raise _Retry(PREVIEW_TOO_SHORT)

  def download(self, url: str, path: str) -> None:
    """Downloads `url` into `path`, which appears only once whole and
    checked.

    Raises:
      _Retry, _Failed: the download failed, or its file is no preview.
      Stopped: the fetch stopped meanwhile.
      files.WriteError: `path` cannot be written.
    """
    try:
      response = self._session().get(url, stream=True, timeout=self._timeout)
    except (requests.exceptions.Timeout,
            requests.exceptions.ConnectionError) as error:
      self._preview_host.failed(url, self._no_answer(error))
      timed_out = isinstance(error, requests.exceptions.ReadTimeout)
      raise _Retry("preview_timeout" if timed_out
                   else "preview_connection_error") from None
    except requests.exceptions.RequestException:
      raise _Failed("preview_bad_url") from None
    self._preview_host.answered()
    with response:
      status = response.status_code
      if status == 429 or status >= 500:
        raise _Retry(f"preview_http_{status}")
      if status != 200:
        raise _Failed(f"preview_http_{status}")
      self._check_headers(response)
      self._write_checked(response, path)

  def _write_checked(self, response: requests.Response, path: str) -> None:
    """The body into a temporary file beside `path`, renamed to `path` once
    whole and checked; deleted otherwise."""
    try:
      handle, temporary = files.temporary_beside(path)
    except OSError as error:
      raise files.WriteError(f"{path}: cannot write"
                             f" ({error.strerror or error})") from error
    try:
      with os.fdopen(handle, "wb") as f:
        received = self._receive(response, f)
        length = response.headers.get("Content-Length")
        # urllib3 raises on a short body too; this is in case it did not.
        if (length is not None and not response.headers.get(
            "Content-Encoding") and length.isdigit()
            and received < int(length)):
          raise _Retry("preview_incomplete")
        if received == 0:
          raise _Retry(PREVIEW_EMPTY)
        f.flush()
        os.fsync(f.fileno())
      self._check_audio(temporary)
      if self._stop.is_set():
        raise Stopped()
      os.replace(temporary, path)
    except BaseException as error:
      with contextlib.suppress(OSError):
        os.remove(temporary)
      if isinstance(error, OSError):  # the disk's: requests' are _Retry
        raise files.WriteError(f"{path}: cannot write"
                               f" ({error.strerror or error})") from error
      raise


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


@contextlib.contextmanager
def _terminal():
  """A stream on what stderr is now, for progress lines: while a preview
  is checked, file descriptor 2 is captured (the decoders' notes), and a
  line written through it then would be lost in the capture."""
  try:
    sys.stderr.flush()
    stream = os.fdopen(os.dup(sys.stderr.fileno()), "w", buffering=1,
                       encoding="utf-8", errors="replace")
  except (AttributeError, OSError, ValueError):  # no descriptor (captured)
    yield sys.stderr
    return
  with stream:
    yield stream


def parse_song_id(text: str) -> int:
  """A Deezer song id: a positive integer in ASCII digits, within int64,
  spaces and tabs around it dropped (csv_files.parse_id, the build's rule).

  Raises:
    ValueError: `text` is not such an id.
  """
  return csv_files.parse_id(text, positive=True)


def read_song_ids(path: str) -> list[int]:
  """Song ids from a text file, one a line (blank lines skipped).

  Args:
    path: the file.

  Returns:
    The ids, each once, in file order.

  Raises:
    FetchError: naming the file (and line) when it is missing or a line is
      not a song id (`parse_song_id`): the list is the user's own, so a
      bad line is refused rather than skipped.
  """
  if not os.path.isfile(path):
    raise FetchError(f"{path}: no such file")
  ids = {}
  try:
    with open(path, encoding="utf-8-sig") as f:
      for line, text in enumerate(f, start=1):
        text = text.rstrip("\r\n")
        if not text.strip():
          continue
        try:
          ids[parse_song_id(text)] = None
        except ValueError:
          raise FetchError(f"{path}: line {line}: {text.strip()!r} is not a"
                           " song id (a positive integer)") from None
  except UnicodeDecodeError as error:
    raise FetchError(f"{path}: a byte that is not UTF-8 ({error.reason});"
                     " save the file as UTF-8") from None
  return list(ids)


def release_song_ids(manual_dir: str) -> tuple[list[int], dict]:
  """The song ids of the release's three split CSVs in `manual_dir`.

  A row whose song_id is not a song id (`parse_song_id`) is a defect of
  that row, as the build counts its defects: counted, not fetched.

  Args:
    manual_dir: holds train_set.csv, validation_set.csv and test_set.csv.

  Returns:
    (every id once, in the order of first appearance (train, validation,
    test); the bad rows: {BAD_SONG_ID: {"count", "examples": ["file:line",
    ...]}}, or {} when there are none).

  Raises:
    csv_files.CsvError: naming the file (and line) when a CSV is missing,
      is not UTF-8 or has no song_id column.
  """
  ids, bad_rows = {}, {}
  for name in zenodo.SPLIT_FILES.values():
    path = os.path.join(manual_dir, name)
    with csv_files.open_csv(path) as (rows, header):
      [column] = csv_files.require_columns(path, header, ["song_id"])
      for line, row in rows:
        try:
          ids[parse_song_id(row[column] if column < len(row) else "")] = None
        except ValueError:
          _add(bad_rows, BAD_SONG_ID, f"{name}:{line}")
  return list(ids), bad_rows


def _remove_temporary_files(audio_dir: str) -> None:
  """Deletes what killed fetches left half-written."""
  for name in os.listdir(audio_dir):
    if _TEMPORARY_NAME.match(name):
      with contextlib.suppress(FileNotFoundError):
        os.remove(os.path.join(audio_dir, name))


def _add(report_part: dict, reason: str, example) -> None:
  entry = report_part.setdefault(reason, {"count": 0, "examples": []})
  entry["count"] += 1
  if len(entry["examples"]) < EXAMPLES:
    entry["examples"].append(example)


def _report(song_ids: list[int], present: set[int],
            outcomes: dict[int, tuple[str, str]], bad_rows: dict) -> dict:
  report = {"requested": len(song_ids), "present_before": 0, "downloaded": 0,
            "unavailable": {}, "failed": {}, "bad_rows": dict(bad_rows)}
  for song_id in song_ids:  # request order: the examples are the first ids
    if song_id in present:
      report["present_before"] += 1
      continue
    outcome, reason = outcomes[song_id]
    if outcome == "downloaded":
      report["downloaded"] += 1
    else:
      _add(report[outcome], reason, song_id)
  for part in ("unavailable", "failed", "bad_rows"):
    report[part] = dict(sorted(report[part].items()))
  return report


def api_url_problem(url: str) -> str | None:
  """What makes `url` unusable as the API's base URL, or None.

  Refused: anything but http(s)://host[:port][/path] with a host, a port
  from 1 to 65535 (IPv6 hosts in brackets), no query or fragment (the
  requests append /track/<id>), and no spaces or control characters.
  """
  if not isinstance(url, str) or not url:
    return "expected an http:// or https:// URL, got nothing"
  if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
    return "a URL holds no spaces or control characters"
  try:
    parts = parse.urlsplit(url)
  except ValueError as error:  # "Invalid IPv6 URL", a bracketed non-address
    return (f"not a URL ({error}; an IPv6 host goes in brackets:"
            " http://[::1]:80)")
  if parts.scheme.lower() not in ("http", "https") or not url.lower(
      ).startswith(f"{parts.scheme.lower()}://"):
    return "expected an http:// or https:// URL"
  host = parts.netloc.rpartition("@")[2]
  if not parts.hostname:
    if host.count(":") > 1 and not host.startswith("["):
      return ("names no host (an IPv6 host goes in brackets:"
              " http://[::1]:80)")
    return "names no host"
  try:
    port = parts.port
  except ValueError:
    port = 0
  if port == 0:
    text = host.rpartition("]")[2] if host.startswith("[") else host
    return f"port {text.partition(':')[2]!r} is not a number from 1 to 65535"
  if parts.query or parts.fragment or url.endswith(("?", "#")):
    return ("has a query or fragment, which the requests' /track/<id> would"
            " fall into")
  try:
    requests.Request("GET", f"{url.rstrip('/')}/track/1").prepare()
  except requests.exceptions.RequestException as error:
    return f"not a URL requests can use ({error})"
  return None


def check_api_url(url: str) -> None:
  """Raises FetchError naming --api_url when `url` is unusable."""
  problem = api_url_problem(url)
  if problem:
    raise FetchError(f"--api_url={url}: {problem}")


def _check_arguments(manual_dir, api_url, workers, max_requests_per_window,
                     retries, window_seconds, timeout_seconds,
                     max_preview_bytes, min_preview_seconds) -> None:
  if not os.path.isdir(manual_dir):
    raise FetchError(f"{manual_dir}: no such directory (--manual_dir)")
  check_api_url(api_url)
  for name, value in (("workers", workers),
                      ("max_requests_per_window", max_requests_per_window),
                      ("max_preview_bytes", max_preview_bytes)):
    if value < 1:
      raise FetchError(f"{name} must be >= 1, got {value}")
  if retries < 0 or not window_seconds > 0:
    raise FetchError(f"need retries >= 0 and window_seconds > 0, got"
                     f" {retries} and {window_seconds}")
  if not timeout_seconds > 0 or not min_preview_seconds >= 0:
    raise FetchError(f"need timeout_seconds > 0 and min_preview_seconds >="
                     f" 0, got {timeout_seconds} and {min_preview_seconds}")


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
          timeout_seconds: float = TIMEOUT_SECONDS,
          backoff_seconds: float = 1.0, progress_seconds: float = 5.0,
          progress_stream=None, max_preview_bytes: int = MAX_PREVIEW_BYTES,
          min_preview_seconds: float = MIN_PREVIEW_SECONDS,
          bad_rows: dict | None = None) -> dict:
  """Fetches the preview of every track that has no audio file yet.

  Args:
    manual_dir: the release's manual dir; previews go to its audio/.
    song_ids: the tracks (Deezer song ids).
    api_url: the Deezer API, or a mirror of it.
    workers: threads fetching at once.
    max_requests_per_window: API requests allowed in any `window_seconds`.
    retries: tries after the first of a transient failure (quota exceeded,
      service busy, HTTP 429 and 5xx, time-outs, lost connections, cut
      downloads, a download that is no preview), each after an exponential
      backoff with jitter.
    window_seconds: the API quota's window.
    timeout_seconds: how long to wait to connect, and between bytes.
    backoff_seconds: the first retry's backoff; it doubles each retry.
    progress_seconds: seconds between progress lines.
    progress_stream: where progress lines go (default: stderr).
    max_preview_bytes: a larger download is refused (`PREVIEW_TOO_LARGE`),
      read no further than this.
    min_preview_seconds: a preview that decodes to less audio is refused
      (`PREVIEW_TOO_SHORT`).
    bad_rows: the CSV rows refused (`release_song_ids`), for the report.

  Returns:
    The report, also written to MANUAL_DIR/fetch_report.json:
    {"requested", "present_before", "downloaded", "unavailable": {reason:
    {"count", "examples"}}, "failed": {reason: {"count", "examples"}},
    "bad_rows": {reason: {"count", "examples"}}}.

  Raises:
    FetchError: a bad argument.
    locks.BusyError: another fetch into `manual_dir` is running.
    HostUnreachableError: the API (ApiUnreachableError) or the preview host
      answers nothing, or stopped answering; no report is written.
    files.WriteError: a preview or the report cannot be written.
    KeyboardInterrupt: interrupted; no partial file is left under a final
      name, and a rerun resumes.
  """
  _check_arguments(manual_dir, api_url, workers, max_requests_per_window,
                   retries, window_seconds, timeout_seconds,
                   max_preview_bytes, min_preview_seconds)
  with locks.held(manual_dir, FETCH_LOCK, FETCH_RULE), \
      contextlib.ExitStack() as stack:
    if progress_stream is None:
      progress_stream = stack.enter_context(_terminal())
    return _fetch_locked(
        manual_dir, list(dict.fromkeys(song_ids)), bad_rows or {},
        SlidingWindowLimiter(max_requests_per_window, window_seconds),
        retries, backoff_seconds,
        _Progress(0, progress_seconds, progress_stream),
        dict(api_url=api_url, timeout_seconds=timeout_seconds,
             pool_size=workers, max_preview_bytes=max_preview_bytes,
             min_preview_seconds=min_preview_seconds), workers)


def _fetch_locked(manual_dir: str, song_ids: list[int], bad_rows: dict,
                  limiter: SlidingWindowLimiter, retries: int,
                  backoff_seconds: float, progress: _Progress,
                  client_options: dict, workers: int) -> dict:
  """`fetch`, its arguments checked and its lock held."""
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

  silent_after = _SILENT_AFTER_PER_WORKER * workers
  client = _Client(
      limiter=limiter, stop=stop,
      api=_Reachability("the API", "--api_url", abort, silent_after,
                        ApiUnreachableError),
      preview_host=_Reachability("the preview host", "whether it is"
                                 " blocked here", abort, silent_after),
      **client_options)
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

  progress.total = len(to_fetch)
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
  report = _report(song_ids, present, outcomes, bad_rows)
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
  if song_ids_file:
    song_ids, bad_rows = read_song_ids(song_ids_file), {}
  else:
    song_ids, bad_rows = release_song_ids(manual_dir)
  return fetch(manual_dir, song_ids, bad_rows=bad_rows, **options)


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
  bad_rows = report.get("bad_rows", {})
  if bad_rows:
    first = next(iter(bad_rows.values()))["examples"][0]
    rows = sum(e["count"] for e in bad_rows.values())
    text += (f"; {rows} CSV row(s) skipped ({reasons(bad_rows)}, first at"
             f" {first})")
  return text
