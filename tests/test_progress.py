"""Progress records: a resumed run's logs drop what it writes again; closing
never hides the error in flight."""

import json
import os

import jax
import pytest

from ctxtag import progress


def test_records_past_the_resumed_step_are_dropped(tmp_path):
  path = tmp_path / "metrics.jsonl"
  records = [{"kind": "train", "step": 1}, {"kind": "train", "step": 5},
             {"kind": "epoch", "step": 5}, {"kind": "train", "step": 10}]
  lines = [json.dumps(record) + "\n" for record in records]
  path.write_text("".join(lines) + '{"kind": "train", "st')  # cut by a kill
  progress.keep_records_through(str(path), 5)
  assert path.read_text() == "".join(lines[:3])
  before = os.stat(path).st_mtime_ns
  progress.keep_records_through(str(path), 5)  # nothing to drop: not rewritten
  assert os.stat(path).st_mtime_ns == before
  progress.keep_records_through(str(path), 0)  # a fresh start
  assert path.read_text() == ""
  progress.keep_records_through(str(tmp_path / "absent.jsonl"), 3)
  assert not os.path.exists(tmp_path / "absent.jsonl")


def test_progress_records_and_closing_never_hides_the_error(tmp_path,
                                                            monkeypatch):
  with progress.Progress("m", str(tmp_path), 20, 10, 8) as logs:
    logs.record_and_print(1, {"loss": 2.0})
    logs.record("epoch", 10, {"validation_loss": 1.5})
  records = [json.loads(line)
             for line in open(tmp_path / "metrics.jsonl")]
  assert records == [{"kind": "train", "step": 1, "loss": 2.0},
                     {"kind": "epoch", "step": 10, "validation_loss": 1.5}]
  logs = progress.Progress("m", str(tmp_path), 20, 10, 8, start_step=10)

  def full_disk():
    raise OSError("cannot close")

  close = logs.close
  monkeypatch.setattr(logs, "close", full_disk)
  with pytest.raises(KeyError, match="in flight"):
    with logs:
      raise KeyError("in flight")
  with pytest.raises(OSError, match="cannot close"):
    with logs:
      pass
  close()


def test_rate_leaves_out_the_first_dispatch_and_compilation(tmp_path,
                                                            capsys):
  """Rate = steps since the first line / (seconds since it - compilation);
  other JAX events are not compilation."""
  now = [100.0]
  logs = progress.Progress("m", str(tmp_path), 1000, 100, 8)
  logs.clock = lambda: now[0]
  logs.record_and_print(1, {"loss": 2.0})  # after the first dispatch: the clock
  assert capsys.readouterr().err == ""
  now[0] = 104.0
  jax.monitoring.record_event_duration_secs(
      "/jax/core/compile/backend_compile_duration", 1.5)
  jax.monitoring.record_event_duration_secs(
      "/jax/core/compile/jaxpr_trace_duration", 0.5)
  jax.monitoring.record_event_duration_secs("/jax/some/other_event", 9.0)
  logs.record_and_print(51, {"loss": 1.0})
  # 50 steps in 4 s less 2 s of compiling: 25 steps/s, 200 examples/s; the
  # 949 steps left take 37.96 s.
  assert capsys.readouterr().err == (
      "[m] epoch 1 step 51/1000 loss 1.0000 200 ex/s ETA<= 0:38\n")
  logs.close()
  jax.monitoring.record_event_duration_secs(
      "/jax/core/compile/backend_compile_duration", 7.0)
  assert logs.compile_seconds == 2.0  # no longer listening
  logs.close()  # closing twice unregisters nothing twice


def test_a_run_resumed_within_the_second_keeps_the_stopped_run_s_events(
    tmp_path, monkeypatch):
  # tensorboardX names event files by the second they open: a resume in
  # the same second must not overwrite the stopped run's file.
  monkeypatch.setattr("time.time", lambda: 1_800_000_000.0)
  with progress.Progress("m", str(tmp_path), 20, 10, 8) as logs:
    logs.record("epoch", 10, {"validation_loss": 1.5})
  with progress.Progress("m", str(tmp_path), 20, 10, 8, start_step=10) as logs:
    logs.record("epoch", 20, {"validation_loss": 1.25})
  events = sorted(os.listdir(tmp_path / "tensorboard"))
  assert len(events) == 2
  assert all(".1800000000." in name for name in events)
  sizes = [os.path.getsize(tmp_path / "tensorboard" / name) for name in events]
  assert min(sizes) > 100  # each holds its epoch's scalar, not just a header
