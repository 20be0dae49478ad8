r"""Fetches the 30 s Deezer previews of the paper's release into its manual dir.

  python -m launch.fetch_audio --manual_dir=DIR [--song_ids=FILE] \
      [--api_url=https://api.deezer.com] [--workers=8] \
      [--max_requests_per_5s=50] [--retries=5] [--timeout_seconds=30] \
      [--max_preview_bytes=5000000] [--min_preview_seconds=10]

Every song id of DIR's train_set.csv, validation_set.csv and test_set.csv
(or of --song_ids, one a line) gets DIR/audio/<song_id>.mp3, unless it has
an audio file already; DIR/fetch_report.json counts what was downloaded and
why the rest was not. Exit status 0 when every track is downloaded, present
or has no preview; 1 when some failed after the retries (rerun the same
command to retry them), the API cannot be reached or stopped answering, or
another fetch into DIR is running; 2 for a bad flag (an --api_url that is
no URL); 130 when interrupted (143 for SIGTERM).
See docs/fetch_audio.md.
"""

from ctxtag import interrupts

# Ahead of the imports below, which take seconds: a Ctrl-C during them is one
# line too, and a worker process that imports this module leaves it to the
# launcher (see interrupts.before_imports).
interrupts.before_imports(__name__)

# pylint: disable=g-import-not-at-top,wrong-import-position
import os

from absl import app
from absl import flags

from ctxtag.sources import previews
from launch import cli

_MANUAL_DIR = flags.DEFINE_string(
    "manual_dir", None, "The release's directory: its CSVs are read, the"
    " previews go to its audio/.", required=True)
_SONG_IDS = flags.DEFINE_string(
    "song_ids", None, "A file of song ids, one a line, to fetch instead of"
    " those of the release's CSVs.")
_API_URL = flags.DEFINE_string(
    "api_url", previews.API_URL, "The Deezer API, or a mirror of it:"
    " http(s)://host[:port][/path].")
_WORKERS = flags.DEFINE_integer(
    "workers", 8, "Tracks fetched at once.", lower_bound=1)
_MAX_REQUESTS_PER_5S = flags.DEFINE_integer(
    "max_requests_per_5s", previews.MAX_REQUESTS_PER_WINDOW,
    "API requests allowed in any 5 s (Deezer's quota is 50).", lower_bound=1)
_RETRIES = flags.DEFINE_integer(
    "retries", 5, "Tries after the first, with exponential backoff, of a"
    " track whose request failed transiently.", lower_bound=0)
_TIMEOUT_SECONDS = flags.DEFINE_float(
    "timeout_seconds", previews.TIMEOUT_SECONDS, "Seconds to wait to"
    " connect, and between bytes of an answer.", lower_bound=0.001)
_MAX_PREVIEW_BYTES = flags.DEFINE_integer(
    "max_preview_bytes", previews.MAX_PREVIEW_BYTES, "A download larger than"
    " this is refused, read no further (a 30 s preview is about 0.5 MB).",
    lower_bound=1)
_MIN_PREVIEW_SECONDS = flags.DEFINE_float(
    "min_preview_seconds", previews.MIN_PREVIEW_SECONDS, "A download that"
    " decodes to less audio is refused (Deezer's previews are 30 s).",
    lower_bound=0)


def _check_api_url(url: str) -> bool:
  problem = previews.api_url_problem(url)
  if problem:
    raise flags.ValidationError(problem)
  return True


# At parsing: an --api_url that cannot be a URL would otherwise be retried
# track by track.
flags.register_validator("api_url", _check_api_url)

flags.adopt_module_key_flags(cli)  # --debug, several hosts: in --helpshort


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  # Ctrl-C and SIGTERM end in cli.run (one line, exit 130 or 143);
  # fetch_previews removes its temporary files on the way out.
  report = previews.fetch_previews(
      _MANUAL_DIR.value, _SONG_IDS.value, api_url=_API_URL.value,
      workers=_WORKERS.value,
      max_requests_per_window=_MAX_REQUESTS_PER_5S.value,
      retries=_RETRIES.value, window_seconds=5.0,
      timeout_seconds=_TIMEOUT_SECONDS.value,
      max_preview_bytes=_MAX_PREVIEW_BYTES.value,
      min_preview_seconds=_MIN_PREVIEW_SECONDS.value)
  report_path = os.path.join(_MANUAL_DIR.value, previews.REPORT_FILE)
  if report["failed"]:
    raise previews.FetchError(
        f"{previews.summary(report)} after {_RETRIES.value} retries; see"
        f" {report_path}; rerun the same command to retry the failed ones")
  print(f"{previews.summary(report)}; see {report_path}")


if __name__ == "__main__":
  cli.run(main)
