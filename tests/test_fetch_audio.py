"""Tests of the preview fetcher against a fake Deezer (tests/deezer_server)."""

import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
import tensorflow_datasets as tfds

from ctxtag import datasets
from ctxtag.sources import build_report
from ctxtag.sources import csv_files
from ctxtag.sources import previews
from tests import deezer_server
from tests import zenodo_fixture
from tests.deezer_server import Fault

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Scaled-down quota, so that a test sees many windows in a few seconds.
FAST_WINDOW, FAST_LIMIT = 1.0, 10
FAST = {"window_seconds": FAST_WINDOW,
        "max_requests_per_window": FAST_LIMIT, "retries": 3,
        "timeout_seconds": 1.0, "backoff_seconds": 0.02,
        # The fake's previews are 1 s long; Deezer's are 30 s.
        "min_preview_seconds": 0.5}
# The same, for the launcher.
FAST_FLAGS = ("--min_preview_seconds=0.5",)

# song id -> (fault, what the report must say of the id).
FAULTS = {
    1: (Fault(deezer_server.QUOTA, 2), "downloaded"),
    2: (Fault(deezer_server.BUSY, 2), "downloaded"),
    3: (Fault(deezer_server.HTTP_503, 2), "downloaded"),
    4: (Fault(deezer_server.HTTP_429), "downloaded"),
    5: (Fault(deezer_server.SLOW), "downloaded"),
    6: (Fault(deezer_server.CUT), "downloaded"),
    7: (Fault(deezer_server.NO_DATA), ("unavailable", "no_such_track")),
    8: (Fault(deezer_server.NO_PREVIEW), ("unavailable", "no_preview")),
    9: (Fault(deezer_server.NOT_READABLE), ("unavailable", "not_readable")),
    10: (Fault(deezer_server.HTTP_404), ("failed", "api_http_404")),
    11: (Fault(deezer_server.BUSY, 10), ("failed", "api_busy")),
    12: (Fault(deezer_server.PREVIEW_404), ("failed", "preview_http_404")),
}
ALL_IDS = list(range(1, 31))


@pytest.fixture(scope="module")
def mp3s():
  return {song: deezer_server.mp3_bytes(song) for song in ALL_IDS}


def _final_files(manual_dir) -> dict[str, bytes]:
  audio_dir = os.path.join(manual_dir, "audio")
  return {name: open(os.path.join(audio_dir, name), "rb").read()
          for name in os.listdir(audio_dir) if not name.startswith(".")}


def _temporary_files(manual_dir) -> list[str]:
  return [n for n in os.listdir(os.path.join(manual_dir, "audio"))
          if n.startswith(".")]


def _expected_files(mp3s, song_ids) -> dict[str, bytes]:
  return {f"{song}.mp3": mp3s[song] for song in song_ids}


def _write_ids(path, song_ids) -> str:
  path.write_text("".join(f"{song}\n" for song in song_ids))
  return str(path)


def _closed_port() -> int:
  with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    return probe.getsockname()[1]


def _launch(*args, timeout=60):
  return subprocess.run([sys.executable, "-m", "launch.fetch_audio", *args],
                        capture_output=True, text=True, cwd=REPO,
                        timeout=timeout)


def _stderr_lines(process) -> list[str]:
  """Stderr's lines but the progress lines."""
  return [line for line in process.stderr.splitlines()
          if line.strip() and not line.startswith("previews: ")]


# `python -m launch.fetch_audio ARGS` with Ctrl-C raising KeyboardInterrupt
# even where the tests run as a background job, which inherits SIGINT
# ignored.
_LAUNCHER_WITH_SIGINT = (
    "import runpy, signal, sys;"
    " signal.signal(signal.SIGINT, signal.default_int_handler);"
    " sys.argv = ['launch.fetch_audio', *sys.argv[1:]];"
    " runpy.run_module('launch.fetch_audio', run_name='__main__',"
    " alter_sys=True)")


def _start_launcher(*args):
  return subprocess.Popen(
      [sys.executable, "-c", _LAUNCHER_WITH_SIGINT, *args], cwd=REPO,
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(condition, seconds: float, what: str) -> None:
  deadline = time.monotonic() + seconds
  while not condition():
    if time.monotonic() > deadline:
      raise AssertionError(f"waited {seconds} s for {what}")
    time.sleep(0.01)


# --- The fetch against every fault -----------------------------------------


def test_every_fault_ends_as_the_report_says(tmp_path, mp3s):
  faults = {song: fault for song, (fault, _) in FAULTS.items()}
  progress = io.StringIO()
  with deezer_server.FakeDeezer(mp3s, faults, max_requests=FAST_LIMIT,
                                window_seconds=FAST_WINDOW,
                                slow_seconds=2.0) as server:
    report = previews.fetch(str(tmp_path), ALL_IDS, api_url=server.url,
                            workers=8, progress_seconds=0.2,
                            progress_stream=progress, **FAST)
  downloaded = [s for s in ALL_IDS
                if FAULTS.get(s, (None, "downloaded"))[1] == "downloaded"]
  assert _final_files(tmp_path) == _expected_files(mp3s, downloaded)
  assert not _temporary_files(tmp_path)
  expected = {"requested": 30, "present_before": 0, "downloaded": 24,
              "unavailable": {}, "failed": {}, "bad_rows": {}}
  for song, (_, outcome) in FAULTS.items():
    if outcome != "downloaded":
      expected[outcome[0]][outcome[1]] = {"count": 1, "examples": [song]}
  assert report == expected
  with open(tmp_path / previews.REPORT_FILE) as f:
    assert json.load(f) == expected
  # The client kept the quota: the server never had to refuse a request.
  assert server.busiest_window(FAST_WINDOW) <= FAST_LIMIT
  assert server.quota_refusals == 0
  assert server.api_requests(10) == 1  # HTTP 404 is not retried
  assert server.api_requests(11) == 1 + FAST["retries"]
  assert server.api_requests(1) == 3  # quota twice, then the answer
  assert [t for t, s in server.preview_log if s == 6][1:]  # cut: fetched again
  lines = progress.getvalue().splitlines()
  assert lines and all(re.fullmatch(
      r"previews: \d+/30 done, \d+\.\d previews/s, ETA (\d+:\d\d:\d\d|\?)",
      line) for line in lines), lines
  assert lines[-1].startswith("previews: 30/30 done")


@pytest.mark.slow  # waits out real 5 s windows
def test_rate_stays_within_the_real_5_s_window(tmp_path, mp3s):
  song_ids = ALL_IDS[:7]
  with deezer_server.FakeDeezer(mp3s, max_requests=4) as server:
    start = time.monotonic()
    report = previews.fetch(str(tmp_path), song_ids, api_url=server.url,
                            workers=8, max_requests_per_window=4,
                            min_preview_seconds=FAST["min_preview_seconds"])
    elapsed = time.monotonic() - start
  assert report["downloaded"] == 7
  assert server.busiest_window(5.0) == 4
  assert server.quota_refusals == 0
  assert elapsed >= 5.0  # the last 3 waited for the first 4's window


def test_limiter_holds_a_slot_a_window_past_its_end():
  now = [0.0]
  limiter = previews.SlidingWindowLimiter(2, window_seconds=5.0,
                                          clock=lambda: now[0])
  with limiter.slot():
    now[0] = 1.0
  with limiter.slot():
    now[0] = 3.0
  # Both slots are taken until 6 and 8: a third request must wait.
  waits = []
  real_wait = limiter._condition.wait

  def advancing_wait(timeout):
    waits.append(timeout)
    now[0] += timeout
    return real_wait(0)

  limiter._condition.wait = advancing_wait
  with limiter.slot():
    assert 6.0 <= now[0] < 6.01
  assert waits


# --- Resuming ----------------------------------------------------------------


def test_rerun_asks_the_api_only_for_missing_tracks(tmp_path, mp3s):
  with deezer_server.FakeDeezer(mp3s) as server:
    first = previews.fetch(str(tmp_path), ALL_IDS[:6], api_url=server.url,
                           **FAST)
    assert first["downloaded"] == 6
    audio_dir = tmp_path / "audio"
    os.remove(audio_dir / "2.mp3")
    (audio_dir / "7.flac").write_bytes(b"a track in another format")
    stale = audio_dir / ".3.mp3.k1ll3d.tmp"  # what a killed run leaves
    stale.write_bytes(b"half")
    before = server.api_requests()
    second = previews.fetch(str(tmp_path), ALL_IDS[:7], api_url=server.url,
                            **FAST)
    assert server.api_requests() - before == 1
    assert server.api_requests(2) == 2
  assert second == {"requested": 7, "present_before": 6, "downloaded": 1,
                    "unavailable": {}, "failed": {}, "bad_rows": {}}
  assert not stale.exists()
  files = _final_files(tmp_path)
  assert files.pop("7.flac") == b"a track in another format"
  assert files == _expected_files(mp3s, ALL_IDS[:6])


@pytest.mark.slow
def test_sigkill_leaves_only_whole_files_and_a_rerun_completes(tmp_path):
  song_ids = ALL_IDS[:8]
  # 30 s previews, as Deezer's: larger than the client's 64 KiB reads, so
  # the kill can find one half-written.
  mp3s = {song: deezer_server.mp3_bytes(song, seconds=30, sample_rate=44100)
          for song in song_ids}
  ids_file = _write_ids(tmp_path / "ids.txt", song_ids)
  manual = tmp_path / "manual"
  manual.mkdir()
  with deezer_server.FakeDeezer(mp3s, trickle_seconds=1.0) as server:
    process = _start_launcher(f"--manual_dir={manual}",
                              f"--song_ids={ids_file}",
                              f"--api_url={server.url}", "--workers=2")
    try:
      audio_dir = manual / "audio"
      # Killed while one preview is whole and another is half-written.
      _wait_for(lambda: audio_dir.is_dir() and _final_files(manual) and any(
          os.path.getsize(audio_dir / n) for n in _temporary_files(manual)),
                30, "a whole preview and a half-written one")
      process.send_signal(signal.SIGKILL)
      process.wait(timeout=10)
    finally:
      process.kill()
      process.wait()
    assert process.returncode == -signal.SIGKILL
    whole = _final_files(manual)
    assert whole and len(whole) < len(song_ids)
    assert whole == _expected_files(mp3s, [int(n[:-4]) for n in whole])
    assert _temporary_files(manual)

    server.trickle_seconds = 0
    # What the killed client had sent may not be read yet.
    server.wait_for_no_connections(timeout=10)
    requests_before = server.api_requests()
    report = previews.fetch(str(manual), song_ids, api_url=server.url,
                            **FAST)
    present = [int(n[:-4]) for n in whole]
    rerun_requests = [s for _, s in server.api_log[requests_before:]]
    assert sorted(rerun_requests) == sorted(set(song_ids) - set(present)), (
        server.api_log)
  assert report["present_before"] == len(present)
  assert report["downloaded"] == 8 - len(present)
  assert _final_files(manual) == _expected_files(mp3s, song_ids)
  assert not _temporary_files(manual)


@pytest.mark.slow
def test_ctrl_c_is_one_line_and_exit_130(tmp_path, mp3s):
  ids_file = _write_ids(tmp_path / "ids.txt", ALL_IDS[:8])
  with deezer_server.FakeDeezer(mp3s, trickle_seconds=1.0) as server:
    process = _start_launcher(f"--manual_dir={tmp_path}",
                              f"--song_ids={ids_file}",
                              f"--api_url={server.url}", "--workers=2",
                              *FAST_FLAGS)
    try:
      _wait_for(lambda: (tmp_path / "audio").is_dir()
                and _temporary_files(tmp_path), 30, "a download")
      process.send_signal(signal.SIGINT)
      _, stderr = process.communicate(timeout=20)
    finally:
      process.kill()
      process.wait()
  assert process.returncode == 130
  assert [line for line in stderr.splitlines() if line.strip()] == [
      "interrupted; rerun the same command to resume"]
  files = _final_files(tmp_path)
  assert files == _expected_files(mp3s, [int(n[:-4]) for n in files])
  assert not _temporary_files(tmp_path)  # the workers deleted theirs


# --- Exit codes and one-line errors ------------------------------------------


@pytest.mark.slow
def test_exit_1_names_the_failures_and_a_rerun_exits_0(tmp_path, mp3s):
  ids_file = _write_ids(tmp_path / "ids.txt", [1, 2, 3, 4])
  with deezer_server.FakeDeezer(
      mp3s, {4: Fault(deezer_server.HTTP_404)}) as server:
    failing = _launch(f"--manual_dir={tmp_path}", f"--song_ids={ids_file}",
                      f"--api_url={server.url}", *FAST_FLAGS)
    del server.faults[4]
    rerun = _launch(f"--manual_dir={tmp_path}", f"--song_ids={ids_file}",
                    f"--api_url={server.url}", *FAST_FLAGS)
  assert failing.returncode == 1, failing.stderr
  [line] = _stderr_lines(failing)
  assert line.startswith("error: 4 tracks: 3 downloaded, 0 present before,"
                         " 0 unavailable, 1 failed (api_http_404 1)")
  assert "rerun the same command" in line
  assert rerun.returncode == 0, rerun.stderr
  assert rerun.stdout.startswith("4 tracks: 1 downloaded, 3 present before,"
                                 " 0 unavailable, 0 failed")
  assert _final_files(tmp_path) == _expected_files(mp3s, [1, 2, 3, 4])


def test_unreachable_api_stops_at_once(tmp_path):
  url = f"http://127.0.0.1:{_closed_port()}"
  start = time.monotonic()
  with pytest.raises(previews.ApiUnreachableError,
                     match=re.escape(url) + r" \(Connection refused\)"):
    previews.fetch(str(tmp_path), list(range(1, 30001)), api_url=url,
                   workers=8)
  assert time.monotonic() - start < 2
  assert not os.path.exists(tmp_path / previews.REPORT_FILE)


@pytest.mark.slow
def test_launcher_unreachable_api_is_one_line(tmp_path):
  ids_file = _write_ids(tmp_path / "ids.txt", range(1, 1001))
  url = f"http://127.0.0.1:{_closed_port()}"
  start = time.monotonic()
  process = _launch(f"--manual_dir={tmp_path}", f"--song_ids={ids_file}",
                    f"--api_url={url}")
  assert time.monotonic() - start < 30
  assert process.returncode == 1
  assert _stderr_lines(process) == [
      f"error: cannot reach the API at {url} (Connection refused); check the"
      " network, or --api_url"]


def _write_csvs(directory, song_cells: dict[str, list[str]],
                header="song_id,user_id,car") -> None:
  for name, cells in song_cells.items():
    rows = [header] + [f"{cell},1,1" for cell in cells]
    (directory / name).write_text("\n".join(rows) + "\n")


def test_release_song_ids_reads_the_three_splits_once_each(tmp_path):
  _write_csvs(tmp_path, {"train_set.csv": ["5", "3", "5"],
                         "validation_set.csv": ["9", "3"],
                         "test_set.csv": [" 12 "]})
  assert previews.release_song_ids(str(tmp_path)) == ([5, 3, 9, 12], {})


def _write_bad_release(directory, case: str) -> None:
  cells = {"train_set.csv": ["1"], "validation_set.csv": ["2"],
           "test_set.csv": ["3"]}
  if case == "missing_csv":
    del cells["test_set.csv"]
  _write_csvs(directory, cells)
  if case == "no_song_id_column":
    _write_csvs(directory, {"train_set.csv": ["1"]},
                header="track,user_id,car")


@pytest.mark.parametrize("case, expected", [
    ("missing_csv", r"test_set\.csv: no such file"),
    ("no_song_id_column", r"train_set\.csv: missing column\(s\) song_id"),
], ids=["missing_csv", "no_song_id_column"])
def test_release_song_ids_names_the_bad_file_and_row(tmp_path, case,
                                                      expected):
  _write_bad_release(tmp_path, case)
  with pytest.raises(csv_files.CsvError, match=expected):
    previews.release_song_ids(str(tmp_path))


def test_song_ids_file_names_the_bad_line(tmp_path):
  path = tmp_path / "ids.txt"
  path.write_text("1\n\n2\nthree\n")
  with pytest.raises(previews.FetchError, match=r"ids\.txt: line 4: 'three'"):
    previews.read_song_ids(str(path))
  path.write_text("7\n\n 8 \n7\n")
  assert previews.read_song_ids(str(path)) == [7, 8]


@pytest.mark.slow
@pytest.mark.parametrize("case, expected", [
    ("missing_csv", r"error: \S+/test_set\.csv: no such file"),
    ("no_song_id_column",
     r"error: \S+/train_set\.csv: missing column\(s\) song_id; .*"),
    ("no_manual_dir",
     r"error: \S+/nowhere: no such directory \(--manual_dir\)"),
    ("missing_song_ids_file", r"error: \S+/ids\.txt: no such file"),
], ids=["missing_csv", "no_song_id_column", "no_manual_dir",
        "missing_song_ids_file"])
def test_launcher_bad_input_is_one_line(tmp_path, case, expected):
  _write_bad_release(tmp_path, case)
  args = [f"--manual_dir={tmp_path}",
          f"--api_url=http://127.0.0.1:{_closed_port()}"]
  if case == "no_manual_dir":
    args[0] = f"--manual_dir={tmp_path / 'nowhere'}"
  if case == "missing_song_ids_file":
    args.append(f"--song_ids={tmp_path / 'ids.txt'}")
  process = _launch(*args)
  assert process.returncode == 1
  [line] = _stderr_lines(process)
  assert re.fullmatch(expected, line), line


# --- End to end: a zenodo build of what was fetched --------------------------


def _release_without_audio(manual_dir: str) -> dict[int, bytes]:
  """A small defect-free release; returns its audio's bytes, which it
  deletes, as the real release comes without audio."""
  zenodo_fixture.write_synthetic_release(manual_dir, num_tracks=10,
                                         seconds=2.5, extension="mp3")
  audio_dir = os.path.join(manual_dir, "audio")
  served = {}
  for name in os.listdir(audio_dir):
    path = os.path.join(audio_dir, name)
    with open(path, "rb") as f:
      served[int(name.partition(".")[0])] = f.read()
    os.remove(path)
  os.rmdir(audio_dir)
  return served


@pytest.mark.slow
def test_zenodo_build_holds_exactly_the_fetched_tracks(tmp_path):
  manual = str(tmp_path / "manual")
  served = _release_without_audio(manual)
  unavailable = {3: Fault(deezer_server.NO_PREVIEW),
                 7: Fault(deezer_server.NO_DATA)}
  with deezer_server.FakeDeezer(served, unavailable) as server:
    song_ids, bad_rows = previews.release_song_ids(manual)
    assert not bad_rows
    report = previews.fetch(manual, song_ids, api_url=server.url, **FAST)
  fetched = sorted(set(served) - set(unavailable))
  assert report["downloaded"] == len(fetched)
  assert _final_files(manual) == {f"{s}.mp3": served[s] for s in fetched}

  options = f"excerpt_seconds={zenodo_fixture.EXCERPT_SECONDS}"
  path = datasets.build("contextual_tags/zenodo", str(tmp_path / "data"),
                        manual, options, workers=1)
  built = set()
  for split in ("train", "validation", "test"):
    source = tfds.builder_from_directory(path).as_data_source(split)
    built |= {int(source[i]["song_id"]) for i in range(len(source))}
  assert sorted(built) == fetched
  with open(os.path.join(path, build_report.REPORT_FILE)) as f:
    dropped = json.load(f)["dropped"]
  assert dropped["audio_missing"]["tracks"] == 2
  assert sorted(dropped["audio_missing"]["examples"]) == [3, 7]
  assert set(dropped) == {"audio_missing"}
