"""What the preview fetcher refuses: downloads that are no preview, URLs
that are no URL, song ids that are no ids (against tests/deezer_server)."""

import os
import re
import time

import pytest

from ctxtag.sources import previews
from tests import deezer_server
from tests import test_fetch_audio as base
from tests.deezer_server import Fault

FAST = base.FAST
# Permanent: more times than the retries.
ALWAYS = 100


def _fetch(tmp_path, server, song_ids, **options):
  return previews.fetch(str(tmp_path), song_ids, api_url=server.url,
                        **{**FAST, **options})


def _failed(report) -> dict[str, list[int]]:
  return {reason: entry["examples"]
          for reason, entry in report["failed"].items()}


@pytest.fixture(scope="module")
def mp3s():
  return {song: deezer_server.mp3_bytes(song) for song in range(1, 11)}


@pytest.fixture(scope="module")
def preview_30s():
  """A real 30 s preview, as Deezer's: 44.1 kHz MP3."""
  return deezer_server.mp3_bytes(3, seconds=30, sample_rate=44100)


# --- A download is checked before it counts ---------------------------------


@pytest.mark.parametrize("fault, reason", [
    (deezer_server.HTML_PAGE, previews.PREVIEW_NOT_AUDIO),
    (deezer_server.HTML_AS_AUDIO, previews.PREVIEW_UNDECODABLE),
], ids=["html_page", "html_labelled_audio"])
def test_an_html_page_is_refused_after_the_retries(tmp_path, mp3s, fault,
                                                   reason):
  with deezer_server.FakeDeezer(mp3s, {2: Fault(fault, ALWAYS)}) as server:
    report = _fetch(tmp_path, server, [1, 2, 3])
    assert server.preview_requests(2) == 1 + FAST["retries"]
  assert _failed(report) == {reason: [2]}
  assert report["downloaded"] == 2
  assert base._final_files(tmp_path) == base._expected_files(mp3s, [1, 3])
  assert not base._temporary_files(tmp_path)


def test_a_refused_download_that_comes_right_on_a_retry_counts(tmp_path,
                                                               mp3s):
  faults = {1: Fault(deezer_server.HTML_PAGE, 2),
            2: Fault(deezer_server.HTML_AS_AUDIO, 1)}
  with deezer_server.FakeDeezer(mp3s, faults) as server:
    report = _fetch(tmp_path, server, [1, 2])
    assert server.preview_requests(1) == 3
    assert server.api_requests(1) == 1  # the preview URL is asked once
  assert report["downloaded"] == 2 and not report["failed"]
  assert base._final_files(tmp_path) == base._expected_files(mp3s, [1, 2])


@pytest.mark.parametrize("fault, bound", [
    (deezer_server.ZEROS, 1 << 20),
    # A bound beyond what the sockets' buffers hold: had the client read
    # the body, the server would have sent it.
    (deezer_server.ZEROS_SIZED, 64 << 20),
], ids=["streamed", "with_content_length"])
def test_hundreds_of_megabytes_of_zeros_stop_at_the_bound(tmp_path, mp3s,
                                                          fault, bound):
  with deezer_server.FakeDeezer(mp3s, {2: Fault(fault, ALWAYS)},
                                zeros_bytes=300 << 20) as server:
    start = time.monotonic()
    report = _fetch(tmp_path, server, [1, 2], max_preview_bytes=bound)
    elapsed = time.monotonic() - start
    attempts = server.preview_requests(2)
    sent = server.sent_bytes.get(2, 0)
  assert _failed(report) == {previews.PREVIEW_TOO_LARGE: [2]}
  assert attempts == 1 + FAST["retries"]
  if fault == deezer_server.ZEROS:
    # The client hung up at the bound: the server got to push what the
    # sockets' buffers hold beyond it, not 4 x 300 MB.
    assert sent < attempts * (bound + (16 << 20)), sent
  else:  # refused on its header alone: nothing read
    assert sent < attempts * (32 << 20), sent
  assert elapsed < 20
  assert base._final_files(tmp_path) == base._expected_files(mp3s, [1])
  assert not base._temporary_files(tmp_path)


def test_the_size_bound_is_the_callers(tmp_path, mp3s):
  # 1 s previews are ~4 kB: a bound under that refuses them all.
  smallest = min(len(mp3s[1]), len(mp3s[2]))
  with deezer_server.FakeDeezer(mp3s) as server:
    report = _fetch(tmp_path, server, [1, 2], max_preview_bytes=smallest - 1,
                    retries=0)
  assert _failed(report) == {previews.PREVIEW_TOO_LARGE: [1, 2]}
  assert not base._final_files(tmp_path)


def test_an_empty_body_is_refused(tmp_path, mp3s):
  with deezer_server.FakeDeezer({**mp3s, 2: b""}) as server:
    report = _fetch(tmp_path, server, [1, 2])
    assert server.preview_requests(2) == 1 + FAST["retries"]
  assert _failed(report) == {previews.PREVIEW_EMPTY: [2]}
  assert base._final_files(tmp_path) == base._expected_files(mp3s, [1])


def test_truncated_and_short_previews_are_refused(tmp_path, preview_30s):
  served = {
      1: preview_30s,
      2: preview_30s[:len(preview_30s) // 2],  # 15 s left: a preview still
      3: preview_30s[:len(preview_30s) // 6],  # 5 s left
      4: preview_30s[:400],  # a header and no frame
      5: deezer_server.mp3_bytes(5, seconds=3.0),  # whole, but 3 s
  }
  with deezer_server.FakeDeezer(served) as server:
    # The default bound: 10 s.
    report = _fetch(tmp_path, server, sorted(served),
                    min_preview_seconds=previews.MIN_PREVIEW_SECONDS)
  assert _failed(report) == {previews.PREVIEW_TOO_SHORT: [3, 5],
                             previews.PREVIEW_UNDECODABLE: [4]}
  assert sorted(base._final_files(tmp_path)) == ["1.mp3", "2.mp3"]
  assert not base._temporary_files(tmp_path)


def test_a_real_preview_passes_the_default_checks(tmp_path, preview_30s):
  with deezer_server.FakeDeezer({7: preview_30s}) as server:
    report = previews.fetch(str(tmp_path), [7], api_url=server.url,
                            **{k: v for k, v in FAST.items()
                               if k != "min_preview_seconds"})
  assert report["downloaded"] == 1
  assert base._final_files(tmp_path) == {"7.mp3": preview_30s}
  assert len(preview_30s) < previews.MAX_PREVIEW_BYTES / 10


@pytest.mark.parametrize("content_type, outcome", [
    ("audio/mpeg", "downloaded"),
    ("audio/mpeg; charset=binary", "downloaded"),
    ("Audio/MPEG", "downloaded"),
    ("application/octet-stream", "downloaded"),
    (None, "downloaded"),  # no header: the decode decides
    ("text/html", previews.PREVIEW_NOT_AUDIO),
    ("application/json", previews.PREVIEW_NOT_AUDIO),
    ("audiox/mpeg", previews.PREVIEW_NOT_AUDIO),
], ids=lambda value: str(value))
def test_content_types(tmp_path, mp3s, content_type, outcome):
  with deezer_server.FakeDeezer(mp3s, content_types={1: content_type}
                                ) as server:
    report = _fetch(tmp_path, server, [1], retries=0)
  if outcome == "downloaded":
    assert report["downloaded"] == 1, report
  else:
    assert _failed(report) == {outcome: [1]}
    assert not base._final_files(tmp_path)


def test_previews_follow_the_umask(tmp_path, mp3s):
  mask = os.umask(0o022)
  os.umask(mask)
  with deezer_server.FakeDeezer(mp3s) as server:
    _fetch(tmp_path, server, [1, 2])
  for name in ("1.mp3", "2.mp3"):
    mode = os.stat(tmp_path / "audio" / name).st_mode & 0o777
    assert mode == 0o666 & ~mask, oct(mode)


def test_decoder_notes_stay_off_the_terminal(tmp_path, capfd):
  body = deezer_server.mp3_bytes(1, seconds=3.0)
  # mpg123 tries to resync, says so on fd 2, and gives up.
  garbled = body[:2000] + bytes(3000) + body[2000:]
  with deezer_server.FakeDeezer({1: garbled, 2: bytes(5000)}) as server:
    # Decoded past the junk.
    report = _fetch(tmp_path, server, [1, 2], retries=0,
                    min_preview_seconds=2.5, progress_stream=None,
                    progress_seconds=1e9)
  assert report["failed"] == {previews.PREVIEW_UNDECODABLE: {
      "count": 2, "examples": [1, 2]}}
  captured = capfd.readouterr()
  # Progress lines are not taken for notes.
  assert "previews: 2/2 done" in captured.err
  assert "mpg123" not in captured.err and "Note:" not in captured.err, (
      captured.err)
  assert "resync" not in captured.err.lower()


# --- --api_url ---------------------------------------------------------------

BAD_URLS = {
    "port_out_of_range": ("http://127.0.0.1:99999", r"port '99999' is not"),
    "port_zero": ("http://127.0.0.1:0", r"port '0' is not"),
    "port_not_numeric": ("http://127.0.0.1:port", r"port 'port' is not"),
    "port_negative": ("http://h:-1", r"port '-1' is not"),
    "port_fullwidth_digits": ("http://h:\uff18\uff10", r"port"),
    "broken_ipv6_bracket": ("http://[::1:8080", r"Invalid IPv6 URL"),
    "ipv6_without_brackets": ("http://::1:8080", r"IPv6 host goes in"),
    "bracketed_non_address": ("http://[api]/", r"not a URL"),
    "no_scheme": ("api.deezer.com", r"expected an http"),
    "no_host": ("http://", r"names no host"),
    "no_host_with_path": ("https:///track", r"names no host"),
    "scheme_only": ("http:api.deezer.com", r"expected an http"),
    "ftp": ("ftp://api.deezer.com", r"expected an http"),
    "query": ("http://h/?key=1", r"query or fragment"),
    "fragment": ("http://h/#x", r"query or fragment"),
    "space": ("http://api.deezer .com", r"no spaces"),
    "empty": ("", r"got nothing"),
}


@pytest.mark.parametrize("case", sorted(BAD_URLS))
def test_an_api_url_that_is_no_url_is_refused(tmp_path, case):
  url, expected = BAD_URLS[case]
  assert re.search(expected, previews.api_url_problem(url))
  start = time.monotonic()
  with pytest.raises(previews.FetchError, match=r"^--api_url="):
    previews.fetch(str(tmp_path), [1, 2, 3], api_url=url)
  assert time.monotonic() - start < 1
  assert not os.path.exists(tmp_path / "audio")


@pytest.mark.parametrize("url", [
    "https://api.deezer.com", "https://api.deezer.com/", "HTTP://H:8080",
    "http://[::1]:8080", "http://user:secret@127.0.0.1:8/v1/",
    "http://h:65535"])
def test_urls_that_are_urls_pass(url):
  assert previews.api_url_problem(url) is None


@pytest.mark.slow
@pytest.mark.parametrize("case", ["port_out_of_range", "broken_ipv6_bracket",
                                  "port_not_numeric", "no_scheme"])
def test_launcher_refuses_a_bad_api_url_at_parsing(tmp_path, case):
  url, expected = BAD_URLS[case]
  process = base._launch(f"--manual_dir={tmp_path}", f"--api_url={url}")
  assert process.returncode == 2, process.stderr
  [line] = base._stderr_lines(process)
  assert line.startswith(f"error: flag --api_url={url}: "), line
  assert re.search(expected, line), line
  assert not os.path.exists(tmp_path / "audio")


# --- Song ids ----------------------------------------------------------------


@pytest.mark.parametrize("text", [
    "\u0661\u0662", "\uff11\uff12", "-3", "0", "00", "1e3", "+5", "1_000",
    "12.0", "0x1f", "", " ", "9223372036854775808", "12\u00a0", "1 2",
    "\u00b2"])
def test_what_is_no_song_id(text):
  with pytest.raises(ValueError):
    previews.parse_song_id(text)


@pytest.mark.parametrize("text, song_id", [
    ("12", 12), (" 12 ", 12), ("\t5", 5), ("007", 7),
    ("9223372036854775807", 2**63 - 1)])
def test_what_is_a_song_id(text, song_id):
  assert previews.parse_song_id(text) == song_id


def _release_with_bad_ids(directory) -> None:
  base._write_csvs(directory, {
      "train_set.csv": ["1", "\u0661\u0662", "2"],
      "validation_set.csv": ["-3", "3", "0"],
      "test_set.csv": ["1e3", " 4 ", "4a"]})
  with open(directory / "test_set.csv", "a") as f:
    f.write("\n,1,1\n")  # a row with an empty song_id


def test_bad_song_ids_are_counted_defects_of_their_rows(tmp_path, mp3s):
  _release_with_bad_ids(tmp_path)
  song_ids, bad_rows = previews.release_song_ids(str(tmp_path))
  assert song_ids == [1, 2, 3, 4]
  expected_rows = {previews.BAD_SONG_ID: {
      "count": 6, "examples": ["train_set.csv:3", "validation_set.csv:2",
                               "validation_set.csv:4", "test_set.csv:2",
                               "test_set.csv:4"]}}
  assert bad_rows == expected_rows
  with deezer_server.FakeDeezer(mp3s) as server:
    report = previews.fetch_previews(str(tmp_path), api_url=server.url,
                                     **FAST)
    asked = sorted({song for _, song in server.api_log})
  assert asked == [1, 2, 3, 4]  # no bad id reaches the API
  assert report["bad_rows"] == expected_rows
  assert report["downloaded"] == 4
  assert "6 CSV row(s) skipped (bad_song_id 6, first at train_set.csv:3)" in (
      previews.summary(report))


@pytest.mark.parametrize("text", ["-3", "\u0661\u0662", "1e3", "0"])
def test_a_bad_line_of_a_song_ids_file_is_refused(tmp_path, text):
  path = tmp_path / "ids.txt"
  path.write_text(f"1\n{text}\n2\n", encoding="utf-8")
  with pytest.raises(previews.FetchError,
                     match=r"ids\.txt: line 2: .* is not a song id"):
    previews.read_song_ids(str(path))


def test_a_song_ids_file_that_is_not_utf8_is_one_error(tmp_path):
  path = tmp_path / "ids.txt"
  path.write_bytes(b"1\n\xff\xfe2\n")
  with pytest.raises(previews.FetchError, match=r"ids\.txt: a byte that"):
    previews.read_song_ids(str(path))


@pytest.mark.slow
def test_launcher_skips_bad_rows_and_says_so(tmp_path, mp3s):
  _release_with_bad_ids(tmp_path)
  with deezer_server.FakeDeezer(mp3s) as server:
    process = base._launch(f"--manual_dir={tmp_path}",
                           f"--api_url={server.url}", *base.FAST_FLAGS)
  assert process.returncode == 0, process.stderr
  assert process.stdout.startswith(
      "4 tracks: 4 downloaded, 0 present before, 0 unavailable, 0 failed;"
      " 6 CSV row(s) skipped (bad_song_id 6, first at train_set.csv:3)")
  assert not base._stderr_lines(process)
