"""A fake Deezer on 127.0.0.1: the API and the preview host, with faults.

  GET /track/<id>        the API: HTTP 200 with {"id", "readable",
                         "preview"}, or {"error": {"type", "message",
                         "code"}} as Deezer answers errors;
  GET /preview/<id>.mp3  the preview's bytes.

It enforces the API's quota as Deezer does: a request beyond `max_requests`
in the last `window_seconds` (counting itself) is answered with error
code 4, and counted in `quota_refusals`. The time of every API request is
logged, so a test can measure the rate a client kept. Faults are injected
per song id (`Fault`); an id with neither a preview nor a fault answers
error 800, "no data". `silent_after` makes the API go silent (accept and
never answer) after that many requests; `preview_base` points the preview
URLs elsewhere (a `SilentServer`). `SilentServer` accepts connections and
never answers.
"""

import dataclasses
import http.server
import io
import json
import re
import socket
import threading
import time

import numpy as np
import soundfile

# Fault kinds. The first `times` requests of the id get them, then it works.
QUOTA = "quota"  # API error 4
BUSY = "busy"  # API error 700
HTTP_503 = "http_503"  # API answers HTTP 503
HTTP_429 = "http_429"  # API answers HTTP 429
SLOW = "slow"  # API answers after `slow_seconds`
CUT = "cut"  # the preview's Content-Length exceeds the bytes sent
HTML_PAGE = "html_page"  # the preview host answers an HTML page, text/html
HTML_AS_AUDIO = "html_as_audio"  # an HTML page, labelled audio/mpeg
ZEROS = "zeros"  # `zeros_bytes` of zeros as audio/mpeg, no Content-Length
ZEROS_SIZED = "zeros_sized"  # the same, with its Content-Length
# Permanent faults (`times` is ignored).
NO_DATA = "no_data"  # API error 800
NO_PREVIEW = "no_preview"  # "preview": ""
NOT_READABLE = "not_readable"  # "readable": false (the preview URL is kept)
HTTP_404 = "http_404"  # API answers HTTP 404
PREVIEW_404 = "preview_404"  # the preview host answers HTTP 404

_PREVIEW_FAULTS = (CUT, PREVIEW_404, HTML_PAGE, HTML_AS_AUDIO, ZEROS,
                  ZEROS_SIZED)
_TRANSIENT = (QUOTA, BUSY, HTTP_503, HTTP_429, SLOW, CUT, HTML_PAGE,
              HTML_AS_AUDIO, ZEROS, ZEROS_SIZED)
HTML = b"<!doctype html><html><body><h1>Sign in</h1></body></html>\n" * 40
_ZERO_CHUNK = bytes(1 << 16)

_ERRORS = {QUOTA: (4, "Exception", "Quota limit exceeded"),
           BUSY: (700, "Exception", "Service busy"),
           NO_DATA: (800, "DataException", "no data")}


@dataclasses.dataclass(frozen=True)
class Fault:
  kind: str
  times: int = 1


def mp3_bytes(song_id: int, seconds: float = 1.0,
              sample_rate: int = 22050) -> bytes:
  """A real MP3 of a sine whose pitch depends on `song_id`."""
  time_s = np.arange(int(seconds * sample_rate)) / sample_rate
  wave = 0.3 * np.sin(2 * np.pi * (200 + 10 * song_id) * time_s)
  buffer = io.BytesIO()
  soundfile.write(buffer, wave.astype(np.float32), sample_rate, format="MP3")
  return buffer.getvalue()


class _Handler(http.server.BaseHTTPRequestHandler):
  protocol_version = "HTTP/1.1"  # keep-alive, as the real hosts

  def log_message(self, *args):  # quiet
    pass

  def setup(self):
    super().setup()
    self.server.fake.connection_opened()

  def finish(self):
    try:
      super().finish()
    finally:
      self.server.fake.connection_closed()

  def _send(self, status: int, body: bytes, content_type: str | None,
            length: int | None = None) -> None:
    self.send_response(status)
    if content_type is not None:
      self.send_header("Content-Type", content_type)
    self.send_header("Content-Length", str(len(body) if length is None
                                           else length))
    self.end_headers()
    self.wfile.write(body)

  def _json(self, value: dict, status: int = 200) -> None:
    self._send(status, json.dumps(value).encode(), "application/json")

  def do_GET(self):  # pylint: disable=invalid-name
    fake: FakeDeezer = self.server.fake
    track = re.fullmatch(r"/track/(-?\d+)", self.path)
    preview = re.fullmatch(r"/preview/(-?\d+)\.mp3", self.path)
    if track:
      self._api(fake, int(track.group(1)))
    elif preview:
      self._preview(fake, int(preview.group(1)))
    else:
      self._send(404, b"not found", "text/plain")

  def _api(self, fake: "FakeDeezer", song_id: int) -> None:
    fault, over_quota = fake.log_api_request(song_id)
    if (fake.silent_after is not None
        and fake.api_requests() > fake.silent_after):
      fake.stopping.wait()  # accepted, read, never answered
      self.close_connection = True
      return
    if over_quota:
      fault = QUOTA
    if fault == SLOW:
      time.sleep(fake.slow_seconds)
    if fault in _ERRORS:
      code, kind, message = _ERRORS[fault]
      self._json({"error": {"type": kind, "message": message, "code": code}})
    elif fault in (HTTP_503, HTTP_429, HTTP_404):
      self._send(int(fault[-3:]), b"<html>error</html>", "text/html")
    elif song_id not in fake.previews:
      code, kind, message = _ERRORS[NO_DATA]
      self._json({"error": {"type": kind, "message": message, "code": code}})
    else:
      self._json({"id": song_id, "readable": fault != NOT_READABLE,
                  "preview": "" if fault == NO_PREVIEW else
                             f"{fake.preview_base or fake.url}/preview/"
                             f"{song_id}.mp3"})

  def _preview(self, fake: "FakeDeezer", song_id: int) -> None:
    fault = fake.log_preview_request(song_id)
    body = fake.previews.get(song_id)
    if body is None or fault == PREVIEW_404:
      self._send(404, b"not found", "text/plain")
      return
    if fault == CUT:
      self.close_connection = True  # the client sees the body end early
      self._send(200, body[:len(body) // 2], "audio/mpeg", length=len(body))
      return
    if fault in (HTML_PAGE, HTML_AS_AUDIO):
      self._send(200, HTML, "text/html; charset=utf-8" if fault == HTML_PAGE
                 else "audio/mpeg")
      return
    if fault in (ZEROS, ZEROS_SIZED):
      self._zeros(fake, song_id, sized=fault == ZEROS_SIZED)
      return
    if fake.trickle_seconds <= 0:
      self._send(200, body, fake.content_types.get(song_id, "audio/mpeg"))
      return
    self.send_response(200)
    self.send_header("Content-Type", "audio/mpeg")
    self.send_header("Content-Length", str(len(body)))
    self.end_headers()
    chunks = np.array_split(np.frombuffer(body, np.uint8), 20)
    for chunk in chunks:
      self.wfile.write(chunk.tobytes())
      self.wfile.flush()
      time.sleep(fake.trickle_seconds / len(chunks))


  def _zeros(self, fake: "FakeDeezer", song_id: int, sized: bool) -> None:
    """Streams `fake.zeros_bytes` of zeros from one 64 KiB buffer (nothing
    that size is ever allocated), counting what the client took."""
    self.close_connection = True
    self.send_response(200)
    self.send_header("Content-Type", "audio/mpeg")
    if sized:
      self.send_header("Content-Length", str(fake.zeros_bytes))
    self.end_headers()
    left = fake.zeros_bytes
    try:
      while left > 0:
        chunk = _ZERO_CHUNK[:min(left, len(_ZERO_CHUNK))]
        self.wfile.write(chunk)
        left -= len(chunk)
        fake.count_sent(song_id, len(chunk))
    except OSError:  # the client hung up: what the test wants to see
      pass


class _Server(http.server.ThreadingHTTPServer):
  daemon_threads = True
  request_queue_size = 128  # the default 5 drops the connects of 8 workers

  def handle_error(self, request, client_address):
    pass  # a client that timed out and left: nothing to report


class FakeDeezer:
  """The fake API and preview host; start with `with FakeDeezer(...) as f`."""

  def __init__(self, previews: dict[int, bytes],
               faults: dict[int, Fault] | None = None,
               max_requests: int = 50, window_seconds: float = 5.0,
               slow_seconds: float = 2.0, trickle_seconds: float = 0.0,
               zeros_bytes: int = 300 << 20, silent_after: int | None = None,
               preview_base: str | None = None,
               content_types: dict[int, str | None] | None = None):
    """Args:
      previews: song id -> the bytes of its preview.
      faults: song id -> the fault its requests get.
      max_requests: API requests allowed in any `window_seconds`.
      window_seconds: the quota's window.
      slow_seconds: how long a SLOW answer takes.
      trickle_seconds: each preview download takes this long (0: at once).
      zeros_bytes: how many zeros a ZEROS fault streams.
      silent_after: API requests answered; later ones are read and never
        answered (None: all are answered).
      preview_base: where the preview URLs point (default: this server).
      content_types: song id -> its preview's Content-Type (None: no such
        header); default audio/mpeg.
    """
    self.previews = dict(previews)
    self.faults = dict(faults or {})
    self.max_requests, self.window_seconds = max_requests, window_seconds
    self.slow_seconds, self.trickle_seconds = slow_seconds, trickle_seconds
    self.api_log: list[tuple[float, int]] = []  # (monotonic time, song id)
    self.preview_log: list[tuple[float, int]] = []
    self.quota_refusals = 0
    self.zeros_bytes, self.silent_after = zeros_bytes, silent_after
    self.preview_base = preview_base
    self.content_types = dict(content_types or {})
    self.sent_bytes: dict[int, int] = {}  # of ZEROS faults, per song id
    self.stopping = threading.Event()
    self._lock = threading.Lock()
    self._connections = 0
    self._no_connections = threading.Condition(self._lock)
    self._server = None
    self._thread = None

  @property
  def url(self) -> str:
    host, port = self._server.server_address[:2]
    return f"http://{host}:{port}"

  def start(self) -> "FakeDeezer":
    self._server = _Server(("127.0.0.1", 0), _Handler)
    self._server.fake = self
    self._thread = threading.Thread(target=self._server.serve_forever,
                                    kwargs={"poll_interval": 0.05},
                                    daemon=True)
    self._thread.start()
    return self

  def stop(self) -> None:
    self.stopping.set()
    self._server.shutdown()
    self._server.server_close()
    self._thread.join()

  def __enter__(self) -> "FakeDeezer":
    return self.start()

  def __exit__(self, *exc_info) -> None:
    self.stop()

  def connection_opened(self) -> None:
    with self._lock:
      self._connections += 1

  def connection_closed(self) -> None:
    with self._lock:
      self._connections -= 1
      self._no_connections.notify_all()

  def wait_for_no_connections(self, timeout: float) -> None:
    """Waits until every client connection is closed: after a client is
    killed, until what it had sent is read (and logged)."""
    with self._lock:
      if not self._no_connections.wait_for(lambda: not self._connections,
                                           timeout):
        raise TimeoutError(f"{self._connections} connection(s) still open"
                           f" after {timeout} s")

  def _fault(self, song_id: int, log: list) -> str | None:
    fault = self.faults.get(song_id)
    if fault is None:
      return None
    earlier = sum(1 for _, logged in log if logged == song_id)
    transient = fault.kind in _TRANSIENT
    if transient and earlier > fault.times:  # this request is in the log
      return None
    return fault.kind

  def log_api_request(self, song_id: int) -> tuple[str | None, bool]:
    """Logs an API request; returns its fault and whether it is over the
    quota."""
    with self._lock:
      now = time.monotonic()
      self.api_log.append((now, song_id))
      recent = sum(1 for t, _ in self.api_log
                   if t > now - self.window_seconds)
      over_quota = recent > self.max_requests
      self.quota_refusals += over_quota
      fault = self._fault(song_id, self.api_log)
      return (fault if fault not in _PREVIEW_FAULTS else None), over_quota

  def log_preview_request(self, song_id: int) -> str | None:
    with self._lock:
      self.preview_log.append((time.monotonic(), song_id))
      fault = self._fault(song_id, self.preview_log)
      return fault if fault in _PREVIEW_FAULTS else None

  def count_sent(self, song_id: int, count: int) -> None:
    with self._lock:
      self.sent_bytes[song_id] = self.sent_bytes.get(song_id, 0) + count

  def preview_requests(self, song_id: int) -> int:
    """Preview downloads so far of `song_id`."""
    with self._lock:
      return sum(1 for _, s in self.preview_log if s == song_id)

  def api_requests(self, song_id: int | None = None) -> int:
    """API requests so far, of `song_id` or of all."""
    with self._lock:
      return sum(1 for _, s in self.api_log if song_id in (None, s))

  def busiest_window(self, window_seconds: float | None = None) -> int:
    """The most API requests received in any window (default: the
    quota's)."""
    window = window_seconds or self.window_seconds
    with self._lock:
      times = sorted(t for t, _ in self.api_log)
    busiest, first = 0, 0
    for last, t in enumerate(times):
      while times[first] <= t - window:
        first += 1
      busiest = max(busiest, last - first + 1)
    return busiest


class SilentServer:
  """Accepts connections on 127.0.0.1 and never answers: a host that is up
  but hangs. Start with `with SilentServer() as s`; `s.url`."""

  def __init__(self):
    self._socket = socket.socket()
    self._socket.bind(("127.0.0.1", 0))
    self._socket.listen(128)
    self._socket.settimeout(0.05)
    host, port = self._socket.getsockname()[:2]
    self.url = f"http://{host}:{port}"
    self._held: list[socket.socket] = []
    self._stopping = threading.Event()
    self._thread = threading.Thread(target=self._accept, daemon=True)
    self.accepted = 0

  def _accept(self) -> None:
    while not self._stopping.is_set():
      try:
        connection, _ = self._socket.accept()
      except OSError:  # the poll's time-out
        continue
      self._held.append(connection)  # kept open, never read or written
      self.accepted += 1

  def __enter__(self) -> "SilentServer":
    self._thread.start()
    return self

  def __exit__(self, *exc_info) -> None:
    self._stopping.set()
    self._thread.join()
    for connection in [*self._held, self._socket]:
      connection.close()
