"""When the preview fetcher stops early: hosts that accept and never answer,
and a second fetch into the same manual dir (against tests/deezer_server)."""

import os
import re
import signal
import time

import pytest

from ctxtag import locks
from ctxtag.sources import previews
from tests import deezer_server
from tests import test_fetch_audio as base

# Short time-outs, so that a silent host costs the test a second or two.
TIMEOUT = 0.3
FAST = {**base.FAST, "timeout_seconds": TIMEOUT, "retries": 5,
        "backoff_seconds": 0.05}


@pytest.fixture(scope="module")
def mp3s():
  return {song: deezer_server.mp3_bytes(song) for song in range(1, 9)}


# --- Hosts that accept and never answer --------------------------------------


# Few ids: a fetch that does not stop early ends too, failing the test,
# after every id's retries.
@pytest.mark.parametrize("workers, ids", [(1, 10), (8, 40)])
def test_an_api_that_never_answers_stops_at_the_third_time_out(tmp_path,
                                                               workers, ids):
  with deezer_server.SilentServer() as silent:
    start = time.monotonic()
    with pytest.raises(previews.ApiUnreachableError) as caught:
      previews.fetch(str(tmp_path), list(range(1, ids + 1)),
                     api_url=silent.url, workers=workers, **FAST)
    elapsed = time.monotonic() - start
  assert str(caught.value) == (
      f"cannot reach the API at {silent.url} (no answer within {TIMEOUT:g}"
      " s); check the network, or --api_url")
  # Three time-outs and two backoffs at most, one after the other.
  assert elapsed < 3 * TIMEOUT + 2 * 1.5 * FAST["backoff_seconds"] * 2 + 2.0
  assert not os.path.exists(tmp_path / previews.REPORT_FILE)
  assert not base._temporary_files(tmp_path)


def test_an_api_that_stops_answering_ends_the_fetch(tmp_path, mp3s):
  workers = 4
  with deezer_server.FakeDeezer(mp3s, silent_after=3) as server:
    start = time.monotonic()
    with pytest.raises(previews.ApiUnreachableError) as caught:
      previews.fetch(str(tmp_path), list(range(1, 101)), api_url=server.url,
                     workers=workers, **FAST)
    elapsed = time.monotonic() - start
    answered = server.api_requests()
  silent_after = previews._SILENT_AFTER_PER_WORKER * workers
  assert re.fullmatch(
      re.escape(f"the API at {server.url} stopped answering ({silent_after}"
                " requests in a row got no answer, the last: no answer"
                f" within {TIMEOUT:g} s); rerun the same command to resume"
                " once it answers"), str(caught.value)), caught.value
  # Every worker's request timed out twice, with one backoff between.
  assert elapsed < 3 * TIMEOUT + 2 * FAST["backoff_seconds"] * 2 + 2.0
  assert answered <= 3 + silent_after + workers
  # What was fetched before is whole and stays.
  files = base._final_files(tmp_path)
  assert files and files == base._expected_files(
      mp3s, [int(name[:-4]) for name in files])
  assert not base._temporary_files(tmp_path)


def test_a_preview_host_that_never_answers_ends_the_fetch(tmp_path, mp3s):
  with deezer_server.SilentServer() as silent, deezer_server.FakeDeezer(
      mp3s, preview_base=silent.url) as server:
    start = time.monotonic()
    with pytest.raises(previews.HostUnreachableError) as caught:
      previews.fetch(str(tmp_path), list(range(1, 41)), api_url=server.url,
                     workers=4, **FAST)
    elapsed = time.monotonic() - start
  assert not isinstance(caught.value, previews.ApiUnreachableError)
  assert str(caught.value).startswith(
      f"cannot reach the preview host at {silent.url} (no answer within")
  assert elapsed < 3 * TIMEOUT + 2.0
  assert not base._final_files(tmp_path)


def test_slow_answers_among_good_ones_do_not_stop_the_fetch(tmp_path, mp3s):
  # Every other track times out once: never many in a row.
  faults = {song: deezer_server.Fault(deezer_server.SLOW)
            for song in range(1, 9, 2)}
  with deezer_server.FakeDeezer(mp3s, faults, slow_seconds=2 * TIMEOUT
                                ) as server:
    report = previews.fetch(str(tmp_path), list(range(1, 9)),
                            api_url=server.url, workers=1, **FAST)
  assert report["downloaded"] == 8 and not report["failed"]


@pytest.mark.slow
def test_launcher_silent_api_is_one_line_within_the_bound(tmp_path):
  ids_file = base._write_ids(tmp_path / "ids.txt", range(1, 1001))
  with deezer_server.SilentServer() as silent:
    start = time.monotonic()
    process = base._launch(f"--manual_dir={tmp_path}",
                           f"--song_ids={ids_file}",
                           f"--api_url={silent.url}", "--timeout_seconds=0.5")
    elapsed = time.monotonic() - start
  assert process.returncode == 1, process.stderr
  assert base._stderr_lines(process) == [
      f"error: cannot reach the API at {silent.url} (no answer within 0.5"
      " s); check the network, or --api_url"]
  assert elapsed < 20  # the interpreter's start, and 3 x 0.5 s


# --- One fetch per manual dir ------------------------------------------------


def _lock_path(manual_dir) -> str:
  return os.path.join(manual_dir, previews.FETCH_LOCK)


@pytest.mark.slow
def test_a_second_fetch_refuses_and_the_first_finishes(tmp_path, mp3s):
  song_ids = list(range(1, 9))
  ids_file = base._write_ids(tmp_path / "ids.txt", song_ids)
  manual = tmp_path / "manual"
  manual.mkdir()
  # Downloads that last until the second fetch is done with, however slow
  # its interpreter's start.
  with deezer_server.FakeDeezer(mp3s, trickle_seconds=120) as server:
    first = base._start_launcher(f"--manual_dir={manual}",
                                 f"--song_ids={ids_file}",
                                 f"--api_url={server.url}", "--workers=2",
                                 *base.FAST_FLAGS)
    try:
      base._wait_for(lambda: (manual / "audio").is_dir()
                     and base._temporary_files(manual), 30,
                     "the first fetch's downloads")
      requests_before = server.api_requests()
      # In this process, and as a second launcher.
      with pytest.raises(locks.BusyError) as caught:
        previews.fetch(str(manual), song_ids, api_url=server.url,
                       **base.FAST)
      second = base._launch(f"--manual_dir={manual}",
                            f"--song_ids={ids_file}",
                            f"--api_url={server.url}", *base.FAST_FLAGS)
      assert first.poll() is None  # it was refused, not run after the first
      server.trickle_seconds = 0
      stdout, stderr = first.communicate(timeout=60)
    finally:
      first.kill()
      first.wait()
    # Neither refused fetch asked the API: each id was asked once.
    assert server.api_requests() == len(song_ids), server.api_log
    assert requests_before <= len(song_ids)
  holder = (f"{manual} is in use by process {first.pid} (")
  assert str(caught.value).startswith(holder), caught.value
  assert "one fetch at a time per manual dir" in str(caught.value)
  assert second.returncode == 1, second.stderr
  [line] = base._stderr_lines(second)
  assert line.startswith(f"error: {holder}"), line
  assert "launch.fetch_audio" in line
  assert first.returncode == 0, stderr
  assert stdout.startswith("8 tracks: 8 downloaded")
  assert base._final_files(manual) == base._expected_files(mp3s, song_ids)
  assert not base._temporary_files(manual)
  assert not os.path.exists(_lock_path(manual))  # let go at the end


def test_a_held_lock_refuses_before_touching_the_folder(tmp_path, mp3s):
  audio_dir = tmp_path / "audio"
  audio_dir.mkdir()
  stale = audio_dir / ".3.mp3.inflight.tmp"
  stale.write_bytes(b"another fetch's download")
  with deezer_server.FakeDeezer(mp3s) as server:
    # Another process's lock: a forked child holds it.
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: hold the lock until told to let go
      try:
        os.close(write_end)
        with locks.held(str(tmp_path), previews.FETCH_LOCK,
                        previews.FETCH_RULE):
          os.read(read_end, 1)
      finally:
        os._exit(0)
    os.close(read_end)
    try:
      base._wait_for(lambda: os.path.exists(_lock_path(tmp_path))
                     and open(_lock_path(tmp_path)).read().startswith(
                         str(pid)), 10, "the child's lock")
      with pytest.raises(locks.BusyError, match=re.escape(
          f"{tmp_path} is in use by process {pid}")):
        previews.fetch(str(tmp_path), [1, 2], api_url=server.url,
                       **base.FAST)
      assert stale.exists()
      assert server.api_requests() == 0
    finally:
      os.write(write_end, b"x")
      os.close(write_end)
      os.waitpid(pid, 0)
    report = previews.fetch(str(tmp_path), [1, 2], api_url=server.url,
                            **base.FAST)
  assert report["downloaded"] == 2
  assert not stale.exists()  # the lock is free: leftovers are the fetch's
  assert not os.path.exists(_lock_path(tmp_path))


@pytest.mark.slow
def test_a_killed_fetch_leaves_no_lock_behind(tmp_path, mp3s):
  ids_file = base._write_ids(tmp_path / "ids.txt", range(1, 9))
  with deezer_server.FakeDeezer(mp3s, trickle_seconds=1.0) as server:
    process = base._start_launcher(f"--manual_dir={tmp_path}",
                                   f"--song_ids={ids_file}",
                                   f"--api_url={server.url}", "--workers=2",
                                   *base.FAST_FLAGS)
    try:
      base._wait_for(lambda: (tmp_path / "audio").is_dir()
                     and base._temporary_files(tmp_path), 30, "a download")
      process.send_signal(signal.SIGKILL)
      process.wait(timeout=10)
    finally:
      process.kill()
      process.wait()
    server.trickle_seconds = 0
    report = previews.fetch(str(tmp_path), list(range(1, 9)),
                            api_url=server.url, **base.FAST)
  assert report["downloaded"] + report["present_before"] == 8
