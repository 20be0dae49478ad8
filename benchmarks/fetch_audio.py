r"""Throughput of the preview fetcher, and the API rate it keeps.

  python -m benchmarks.fetch_audio [--ids=300] [--workers=8] \
      [--max_requests_per_5s=50]

Serves `ids` real 30 s MP3 previews (44.1 kHz, about 120 kB each) from the
fake Deezer of the tests (tests/deezer_server.py) on 127.0.0.1, with
Deezer's quota enforced, and fetches them twice into fresh directories:
with the API limit (the default is Deezer's 50 requests in any 5 s), and,
as the baseline in the same run, with no limit (what the downloads and the
API round trips alone allow). Prints previews/s, the API requests in the
busiest 5 s window as the server logged them, the requests the server had
to refuse (0: the client kept the quota), and what 30,000 previews take at
the limited rate.
"""

import os
import sys
import tempfile
import time

from absl import app
from absl import flags

from ctxtag.sources import previews
from tests import deezer_server

_IDS = flags.DEFINE_integer("ids", 300, "Previews to fetch.", lower_bound=1)
_WORKERS = flags.DEFINE_integer("workers", 8, "Fetching threads.",
                                lower_bound=1)
_MAX_REQUESTS_PER_5S = flags.DEFINE_integer(
    "max_requests_per_5s", previews.MAX_REQUESTS_PER_WINDOW,
    "The API quota, of the server and the client.", lower_bound=1)
_DISTINCT = 8  # distinct MP3s, served in turn: encoding 300 takes a minute
_RELEASE_TRACKS = 30_000  # about the paper's release


def _fetch_once(bodies: dict[int, bytes], limit: int) -> dict:
  with deezer_server.FakeDeezer(bodies, max_requests=limit) as server, \
      tempfile.TemporaryDirectory(prefix="fetch_audio_") as directory:
    start = time.perf_counter()
    report = previews.fetch(directory, sorted(bodies), api_url=server.url,
                            workers=_WORKERS.value,
                            max_requests_per_window=limit,
                            progress_seconds=1e9)
    elapsed = time.perf_counter() - start
    audio_dir = os.path.join(directory, "audio")
    megabytes = sum(os.path.getsize(os.path.join(audio_dir, name))
                    for name in os.listdir(audio_dir)) / 1e6
  if report["downloaded"] != len(bodies):
    raise RuntimeError(f"not every preview was fetched: {report}")
  return {"seconds": elapsed, "rate": len(bodies) / elapsed,
          "megabytes": megabytes, "api_requests": server.api_requests(),
          "busiest_5s": server.busiest_window(5.0),
          "refused": server.quota_refusals}


def main(argv):
  del argv
  distinct = [deezer_server.mp3_bytes(i, seconds=30, sample_rate=44100)
              for i in range(_DISTINCT)]
  bodies = {song: distinct[song % _DISTINCT]
            for song in range(1, _IDS.value + 1)}
  limit = _MAX_REQUESTS_PER_5S.value
  print(f"fetch_audio benchmark: {_IDS.value} previews of"
        f" {len(distinct[0]) / 1e3:.0f} kB, {_WORKERS.value} workers,"
        f" Python {sys.version.split()[0]}, {os.cpu_count()} CPU cores")
  for name, run_limit in ((f"limited ({limit} / 5 s)", limit),
                          ("unlimited (baseline)", 10**9)):
    result = _fetch_once(bodies, run_limit)
    print(f"{name:>22}: {result['seconds']:6.1f} s, {result['rate']:7.1f}"
          f" previews/s, {result['megabytes'] / result['seconds']:6.1f} MB/s;"
          f" {result['api_requests']} API requests, busiest 5 s window"
          f" {result['busiest_5s']}, refused by the server"
          f" {result['refused']}")
  steady = limit / previews.WINDOW_SECONDS
  print(f"at the limit's steady rate ({steady:.0f} requests/s), the release's"
        f" {_RELEASE_TRACKS:,} previews take {_RELEASE_TRACKS / steady:,.0f} s"
        f" ({_RELEASE_TRACKS / steady / 60:.0f} min)")


if __name__ == "__main__":
  app.run(main)
