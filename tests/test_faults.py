"""The fault catalog of evaluation and launchers: bad input, bad settings and
a full disk, each with the exact message it gives and what it leaves behind.
"""

import errno
import json
import os
import shutil
import subprocess
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ctxtag import errors
from ctxtag import files
from ctxtag import labels
from ctxtag import report
from ctxtag import run_config
from ctxtag import tables
from ctxtag import train
from ctxtag.sources import options
from ctxtag.sources import simulated
from ctxtag.sources import zenodo
from launch import cli
from launch import common
from launch.configs import default
from launch.configs import smoke

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEADER = "song_id,user_id," + ",".join(labels.LABELS)
TRACK_HEADER = "song_id," + ",".join(labels.LABELS)
GOOD_ROW = "0,0,1,0,0,0,0,0,0,0,0,0"


def _write(path, header, rows):
  path.write_text(header + "\n" + "\n".join(rows) + "\n")
  return str(path)


def _one_hot_rows(pairs):
  """Ground-truth rows 'song,user,<one-hot>' for (song, user, label)."""
  return [f"{s},{u}," + ",".join("1" if c == label else "0"
                                 for c in range(labels.NUM_LABELS))
          for s, u, label in pairs]


def _launch(*args, timeout=120):
  return subprocess.run([sys.executable, "-m", *args], capture_output=True,
                        text=True, cwd=REPO, timeout=timeout)


def _stderr_lines(process):
  return [line for line in process.stderr.splitlines() if line.strip()]


# --- Reading tables -------------------------------------------------------


def test_utf8_byte_order_mark_is_read_as_utf8(tmp_path):
  path = tmp_path / "gt.csv"
  path.write_bytes(("\ufeff" + HEADER + "\r\n" + GOOD_ROW + "\r\n"
                    + "3,4,0,1,0,0,0,0,0,0,0,0\r\n").encode("utf-8"))
  table = tables.read_groundtruth(str(path))
  assert table.song_id.tolist() == [0, 3]
  assert table.user_id.tolist() == [0, 4]
  assert table.values_RxC.argmax(axis=1).tolist() == [0, 1]


def test_id_beyond_int64_names_file_and_line(tmp_path):
  path = _write(tmp_path / "gt.csv", HEADER,
                [GOOD_ROW, "9223372036854775808,2,0,1,0,0,0,0,0,0,0,0"])
  with pytest.raises(tables.TableError,
                     match=r"gt.csv, line 3: id 9223372036854775808 does not"
                     r" fit in 64 bits"):
    tables.read_groundtruth(path)
  # The largest int64 itself is an id like any other.
  path = _write(tmp_path / "gt.csv", HEADER,
                [GOOD_ROW, "9223372036854775807,2,0,1,0,0,0,0,0,0,0,0"])
  assert tables.read_groundtruth(path).song_id[1] == np.iinfo(np.int64).max


def test_non_utf8_byte_names_file_and_line(tmp_path):
  path = tmp_path / "gt.csv"
  path.write_bytes((HEADER + "\n" + GOOD_ROW + "\n").encode()
                   + b"1,caf\xe9,0,1,0,0,0,0,0,0,0,0\n")
  with pytest.raises(tables.TableError,
                     match=r"gt.csv, line 3: byte b'\\xe9' is not UTF-8"):
    tables.read_groundtruth(str(path))


def test_error_is_a_user_error_and_a_value_error():
  assert issubclass(tables.TableError, errors.UserError)
  assert issubclass(tables.TableError, ValueError)


def test_blank_lines_are_skipped_and_lines_stay_the_files(tmp_path):
  path = _write(tmp_path / "gt.csv", HEADER,
                [GOOD_ROW, "", "1,1,0,0,0,0,0,0,0,0,0,0"])
  with pytest.raises(tables.TableError, match=r"gt.csv, line 4: a ground"):
    tables.read_groundtruth(path)


def _track_rows(scores_by_track):
  return [f"{song}," + ",".join(f"{v:g}" for v in values)
          for song, values in enumerate(scores_by_track)]


@pytest.mark.parametrize("case,transform,shown", [
    ("percentages", lambda p: 100 * p, "car=70"),
    ("logits", lambda p: np.log(p / (1 - p)), "car=-0.847298"),
    ("negated", lambda p: -p, "car=-0.3"),
])
def test_audio_scores_outside_0_1_name_file_and_line(tmp_path, case,
                                                     transform, shown):
  probabilities = np.full((3, labels.NUM_LABELS), 0.5)
  probabilities[1] = 0.7
  probabilities[1, 0] = 0.3 if case != "percentages" else 0.7
  scores = probabilities.copy()
  scores[1:] = transform(probabilities[1:])
  path = _write(tmp_path / "audio.csv", TRACK_HEADER, _track_rows(scores))
  with pytest.raises(tables.TableError) as raised:
    tables.read_audio_predictions(path)
  assert str(raised.value) == (
      f"{path}, line 3: audio-model scores must lie in [0, 1], got {shown};"
      " give probabilities, not percentages, logits or negated scores")


def test_audio_scores_at_the_bounds_are_accepted(tmp_path):
  scores = np.zeros((2, labels.NUM_LABELS))
  scores[1] = 1.0
  path = _write(tmp_path / "audio.csv", TRACK_HEADER, _track_rows(scores))
  np.testing.assert_array_equal(
      tables.read_audio_predictions(path).values_RxC, scores)


def _pair_rows(rows):
  return [f"{i},{i}," + ",".join(f"{v:g}" for v in values)
          for i, values in enumerate(rows)]


def test_user_model_rows_must_be_distributions(tmp_path):
  uniform = np.full(labels.NUM_LABELS, 0.1)
  short = uniform.copy()
  short[0] = 0.0  # sums to 0.9: a context left out
  path = _write(tmp_path / "user.csv", HEADER,
                _pair_rows([uniform, uniform, short]))
  with pytest.raises(tables.TableError) as raised:
    tables.read_pair_predictions(path)
  assert str(raised.value) == (
      f"{path}, line 4: a user-model row must be a distribution over the"
      " contexts summing to 1 (within 0.001), got a sum of 0.9")

  above = uniform.copy()
  above[0], above[1] = 1.2, -0.3
  path = _write(tmp_path / "user.csv", HEADER, _pair_rows([uniform, above]))
  with pytest.raises(tables.TableError,
                     match=r"user.csv, line 3: user-model scores must lie in"
                     r" \[0, 1\], got car=1.2"):
    tables.read_pair_predictions(path)


def test_user_model_rows_within_tolerance_are_accepted(tmp_path):
  assert tables.ROW_SUM_TOLERANCE == 1e-3
  almost = np.full(labels.NUM_LABELS, 0.1)
  almost[0] += 0.0009  # sums to 1.0009
  path = _write(tmp_path / "user.csv", HEADER, _pair_rows([almost]))
  assert tables.read_pair_predictions(path).values_RxC.sum() == (
      pytest.approx(1.0009))


# --- Undefined metrics on a tiny ground truth -----------------------------


def _strict_json(path):
  def refuse(constant):
    raise AssertionError(f"{path} holds {constant}, not strict JSON")
  with open(path) as f:
    return json.load(f, parse_constant=refuse)


def test_tiny_groundtruth_gives_null_not_nan(tmp_path):
  # Two pairs: track 0 is car for user 0, track 1 is gym for user 1. Every
  # other context has no positive: its AUC is undefined.
  gt = _write(tmp_path / "gt.csv", HEADER, _one_hot_rows([(0, 0, 0),
                                                          (1, 1, 1)]))
  scores = np.full((2, labels.NUM_LABELS), 0.1)
  scores[0, 0], scores[1, 1], scores[1, 0] = 0.9, 0.8, 0.3
  audio = _write(tmp_path / "audio.csv", TRACK_HEADER, _track_rows(scores))
  out = tmp_path / "out"
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # no "Mean of empty slice"
    common.evaluate_tables(str(out), gt, audio, {}, "tiny", [])
  results = _strict_json(out / "results.json")
  mo_mg = results["mo_mg"]
  assert mo_mg["per_label"]["car"] == {"auc": 1.0, "recall": 1.0,
                                       "precision": 1.0, "f1": 1.0}
  assert mo_mg["per_label"]["happy"] == {"auc": None, "recall": 0.0,
                                         "precision": 0.0, "f1": 0.0}
  # The mean AUC is over the two defined contexts; the others count 0.
  assert mo_mg["average"] == {"auc": 1.0, "recall": 0.2, "precision": 0.2,
                              "f1": 0.2}
  text = (out / "report.md").read_text()
  assert "| happy |  | 0.000 | 0.000 | 0.000 |" in text
  assert "| car | 1.000 | 1.000 | 1.000 | 1.000 |" in text


def test_one_pair_gives_a_null_mean_auc(tmp_path):
  gt = _write(tmp_path / "gt.csv", HEADER, _one_hot_rows([(0, 0, 2)]))
  audio = _write(tmp_path / "audio.csv", TRACK_HEADER,
                 _track_rows(np.full((1, labels.NUM_LABELS), 0.6)))
  out = tmp_path / "out"
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    common.evaluate_tables(str(out), gt, audio, {}, "one pair", [])
  results = _strict_json(out / "results.json")
  for protocol in ("mo_mg", "mo_sg", "so_sg"):
    assert results[protocol]["average"]["auc"] is None
  # Thresholded at 0.5, every context is predicted: only happy is right.
  # One user: every resample draws it, so the intervals have no width.
  assert ("| MO-SG, audio (thresholded, vs user's context) |  |"
          " 0.100 [0.100, 0.100] | 0.100 [0.100, 0.100] |"
          " 0.100 [0.100, 0.100] |") in (out / "report.md").read_text()
  assert results["mo_sg"]["average"]["auc_ci"] == [None, None]


# --- Writes: atomic, and a full disk keeps earlier outputs ---------------


@pytest.fixture
def evaluated(tmp_path):
  """A directory with earlier outputs, and the tables that made them."""
  rng = np.random.default_rng(3)
  song = np.repeat(np.arange(12), 3)
  user = np.arange(36)
  tables.write_groundtruth(str(tmp_path / "gt.csv"), song, user,
                           rng.integers(0, 10, size=36))
  tables.write(str(tmp_path / "audio.csv"), np.arange(12),
               rng.uniform(size=(12, 10)))
  tables.write(str(tmp_path / "other.csv"), np.arange(12),
               rng.uniform(size=(12, 10)))
  out = tmp_path / "out"
  common.evaluate_tables(str(out), str(tmp_path / "gt.csv"),
                         str(tmp_path / "audio.csv"), {}, "first", [])
  return tmp_path, out


def _snapshot(directory):
  return {os.path.relpath(os.path.join(root, name), directory):
          open(os.path.join(root, name), "rb").read()
          for root, _, names in os.walk(directory) for name in names}


@pytest.mark.parametrize("failing", ["results.json", "report.md",
                                     "satisfaction.png"])
def test_full_disk_keeps_every_earlier_output(evaluated, monkeypatch,
                                              failing):
  tmp_path, out = evaluated
  before = _snapshot(out)
  assert set(before) == {"results.json", "report.md", "plots/per_context.png",
                         "plots/satisfaction.png"}
  write_temporary = report._write_temporary

  def full_disk(path, content):
    if path.endswith(failing):
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return write_temporary(path, content)

  monkeypatch.setattr(report, "_write_temporary", full_disk)
  with pytest.raises(files.WriteError) as raised:
    common.evaluate_tables(str(out), str(tmp_path / "gt.csv"),
                           str(tmp_path / "other.csv"), {}, "second", [])
  failed_path = os.path.join(str(out), "plots" if failing.endswith(".png")
                             else "", failing)
  assert str(raised.value) == (
      f"{os.path.normpath(failed_path)}: cannot write (No space left on"
      " device)")
  assert _snapshot(out) == before  # nothing replaced, no temporary left


def test_outputs_replace_earlier_ones_when_the_disk_has_room(evaluated):
  tmp_path, out = evaluated
  first = _snapshot(out)
  common.evaluate_tables(str(out), str(tmp_path / "gt.csv"),
                         str(tmp_path / "other.csv"), {}, "second", [])
  second = _snapshot(out)
  assert set(second) == set(first)
  assert second["results.json"] != first["results.json"]
  assert second["report.md"].startswith(b"# second")
  assert second["plots/per_context.png"].startswith(b"\x89PNG")


def _fail_fsync(monkeypatch):
  def fsync(_):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
  monkeypatch.setattr(os, "fsync", fsync)


def test_full_disk_while_writing_a_table_names_it(tmp_path, monkeypatch):
  path = str(tmp_path / "audio.csv")
  tables.write(path, [0], np.full((1, 10), 0.5))
  _fail_fsync(monkeypatch)
  with pytest.raises(files.WriteError,
                     match=r"audio.csv: cannot write \(No space left"):
    tables.write(path, [0], np.full((1, 10), 0.25))
  assert os.listdir(tmp_path) == ["audio.csv"]
  assert tables.read(path, with_user=False).values_RxC[0, 0] == 0.5


_FULL_DISK_SCRIPT = r"""
set -e
mount -t tmpfs -o size=1m tmpfs "$OUT"
run() { "$PYTHON" -m launch.evaluate --groundtruth="$DATA/gt.csv" \
    --audio_predictions="$DATA/$1" --output_dir="$OUT"; }
run audio.csv > /dev/null
mkdir "$DATA/before" "$DATA/after"
cp -r "$OUT/results.json" "$OUT/report.md" "$OUT/plots" "$DATA/before"
dd if=/dev/zero of="$OUT/filler" bs=4k 2> /dev/null || true
set +e
run other.csv > /dev/null 2> "$DATA/stderr"
echo $? > "$DATA/status"
rm "$OUT/filler"
ls -A "$OUT" > "$DATA/listing"
cp -r "$OUT/results.json" "$OUT/report.md" "$OUT/plots" "$DATA/after"
"""


def test_real_full_disk_keeps_earlier_results_and_names_the_file(evaluated):
  """On a 1 MB tmpfs filled up, in a user namespace; skipped where the
  kernel or the sandbox allows no such mount."""
  if shutil.which("unshare") is None:
    pytest.skip("no unshare: a tmpfs needs a mount namespace")
  probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True)
  if probe.returncode:
    pytest.skip("no user namespace for a tmpfs mount here")
  tmp_path, _ = evaluated
  out = tmp_path / "small_disk"
  out.mkdir()
  process = subprocess.run(
      ["unshare", "-rm", "sh", "-c", _FULL_DISK_SCRIPT], cwd=REPO,
      capture_output=True, text=True, timeout=180,
      env=dict(os.environ, OUT=str(out), DATA=str(tmp_path),
               PYTHON=sys.executable))
  assert process.returncode == 0, process.stderr
  assert (tmp_path / "status").read_text().strip() == "1"
  assert (tmp_path / "stderr").read_text().splitlines() == [
      f"error: {out}/results.json: cannot write (No space left on device)"]
  assert (tmp_path / "listing").read_text().split() == [
      "plots", "report.md", "results.json"]
  assert _snapshot(tmp_path / "after") == _snapshot(tmp_path / "before")
  _strict_json(tmp_path / "after" / "results.json")


# --- Launchers: one line for a user error, a traceback for a bug ---------


def test_bad_csv_ends_with_one_line_naming_file_and_line(tmp_path):
  gt = _write(tmp_path / "gt.csv", HEADER, [GOOD_ROW])
  audio = _write(tmp_path / "audio.csv", TRACK_HEADER,
                 ["0," + ",".join(["0.5"] * 9)])
  args = ["launch.evaluate", f"--groundtruth={gt}",
          f"--audio_predictions={audio}", f"--output_dir={tmp_path}/out"]
  process = _launch(*args)
  assert process.returncode == 1
  assert _stderr_lines(process) == [
      f"error: {audio}, line 2: 10 fields, the header has 11"]
  assert not (tmp_path / "out").exists()

  debug = _launch(*args, "--debug")
  assert debug.returncode == 1
  assert "Traceback (most recent call last)" in debug.stderr
  assert debug.stderr.rstrip().endswith(
      f"TableError: {audio}, line 2: 10 fields, the header has 11")


@pytest.mark.parametrize("args,status,line", [
    (["--groundtruth={gt}", "--output_dir={out}"], 2,
     "error: no predictions to evaluate: give --audio_predictions,"
     " --user_predictions or --user_only_predictions"),
    (["--workdir={out}"], 1,
     "error: {out}: no such directory; expected the --workdir of a ctxtag"
     " run"),
    (["--workdir={tmp}", "--groundtruth={gt}"], 2,
     "error: --workdir evaluates a run; it takes no --groundtruth"),
    (["--split=train", "--workdir={tmp}"], 2,
     "error: flag --split=train: value should be one of <validation|test>"
     " (see --helpshort)"),
    (["--groundtruth={gt}", "--audio_predictions={gt}",
      "--validation_groundtruth={gt}", "--output_dir={out}"], 2,
     "error: thresholds are tuned on validation with both"
     " --validation_groundtruth and --validation_audio_predictions; give"
     " both or neither"),
    (["--groundtruth={gt}", "--user_predictions={gt}",
      "--validation_groundtruth={gt}", "--validation_audio_predictions={gt}",
      "--output_dir={out}"], 2,
     "error: --validation_audio_predictions tunes the audio model's"
     " thresholds; give --audio_predictions too"),
    (["--workdir={tmp}", "--train_groundtruth={gt}"], 2,
     "error: --workdir evaluates a run; it takes no --train_groundtruth"),
    (["--groundtruth={gt}", "--audio_predictions={gt}",
      "--bootstrap_resamples=-1", "--output_dir={out}"], 2,
     "error: flag --bootstrap_resamples=-1: -1 is not a non-negative"
     " integer (see --helpshort)"),
])
def test_evaluate_usage_errors_write_nothing(tmp_path, args, status, line):
  gt = _write(tmp_path / "gt.csv", HEADER, [GOOD_ROW])
  names = {"gt": gt, "out": f"{tmp_path}/out", "tmp": str(tmp_path)}
  process = _launch("launch.evaluate", *[a.format(**names) for a in args])
  assert process.returncode == status
  assert _stderr_lines(process) == [line.format(**names)]
  assert sorted(os.listdir(tmp_path)) == ["gt.csv"]


_BUG = """
from launch import cli
def main(argv):
  {raise_}
cli.run(main)
"""


@pytest.mark.parametrize("raise_,status,stderr", [
    ("raise KeyError('audio')", 1, "Traceback"),
    ("raise OSError(28, 'No space left on device')", 1,
     "error: No space left on device"),
    ("open('/nonexistent/file.csv')", 1,
     "error: /nonexistent/file.csv: No such file or directory"),
    ("from absl import app; raise app.UsageError('--model is required')", 2,
     "error: --model is required"),
])
def test_bugs_keep_their_traceback_and_user_errors_do_not(raise_, status,
                                                          stderr):
  process = subprocess.run(
      [sys.executable, "-c", _BUG.format(raise_=raise_)], capture_output=True,
      text=True, cwd=REPO, timeout=60)
  assert process.returncode == status
  if stderr == "Traceback":
    assert "Traceback (most recent call last)" in process.stderr
    assert process.stderr.rstrip().endswith("KeyError: 'audio'")
  else:
    assert _stderr_lines(process) == [stderr]


def test_every_launcher_runs_through_cli():
  for name in ("build_dataset", "evaluate", "reproduce", "train", "sweep",
               "tag"):
    with open(os.path.join(REPO, "launch", f"{name}.py")) as f:
      text = f.read()
    assert "cli.run(main)" in text and "app.run(main)" not in text, name


def test_cli_message_is_one_line_and_names_the_file():
  error = PermissionError(errno.EACCES, "Permission denied", "/x/results.json")
  assert cli.is_user_error(error)
  assert cli.message(error) == "/x/results.json: Permission denied"
  assert cli.message(errors.ConfigError("a\n  b")) == "a b"
  assert not cli.is_user_error(OSError(errno.EIO, "I/O error"))
  assert not cli.is_user_error(ValueError("a bug"))


@pytest.mark.parametrize("launcher", ["train", "reproduce"])
def test_bad_config_value_on_a_launcher_is_one_line_and_writes_nothing(
    tmp_path, launcher):
  workdir = str(tmp_path / "run")
  process = subprocess.run(
      [sys.executable, "-m", f"launch.{launcher}", f"--workdir={workdir}",
       "--config.audio.batch_size=0"]
      + (["--model=audio"] if launcher == "train" else []),
      capture_output=True, text=True, cwd=REPO, timeout=120)
  assert process.returncode == 1
  assert _stderr_lines(process) == [
      "error: config audio.batch_size=0: expected an integer >= 1"]
  assert not os.path.exists(workdir)


@pytest.mark.parametrize("source,value,message", [
    (simulated.SimulationConfig(), "nan", "is not a finite number"),
    (simulated.SimulationConfig(), "inf", "is not a finite number"),
    (simulated.SimulationConfig(), "1e-6", "must be >= 1 s to hold a beat"),
    (zenodo.Options(), "nan", "is not a finite number"),
    (zenodo.Options(), "1e-6", r"must be >= 0.046"),
])
def test_excerpt_seconds_out_of_range_is_refused(source, value, message):
  with pytest.raises(errors.ConfigError, match=message):
    options.replace(source, {"excerpt_seconds": value}, "dataset")


# --- Run configs: validated before anything is written -------------------


@pytest.mark.parametrize("change,message", [
    ({"audio.batch_size": 0},
     "config audio.batch_size=0: expected an integer >= 1"),
    ({"user.batch_size": -8},
     "config user.batch_size=-8: expected an integer >= 1"),
    ({"audio_user.max_epochs": 0},
     "config audio_user.max_epochs=0: expected an integer >= 1"),
    ({"models": ("audio", "transformer")},
     "config models=('audio', 'transformer'): expected known model names"
     " only, 'transformer' is not one of ['audio', 'audio_user', 'user']"),
    ({"audio.learning_rate": float("nan")},
     "config audio.learning_rate=nan: expected a finite number in (0, inf)"),
    ({"user.learning_rate": float("inf")},
     "config user.learning_rate=inf: expected a finite number in (0, inf)"),
    ({"audio.learning_rate": 0.0},
     "config audio.learning_rate=0.0: expected a finite number in (0, inf)"),
    ({"audio.patience": 0},
     "config audio.patience=0: expected an integer >= 1"),
    ({"audio.steps_per_epoch": -1},
     "config audio.steps_per_epoch=-1: expected an integer >= 0"),
    ({"eval_batch_size": 0},
     "config eval_batch_size=0: expected an integer >= 1"),
    ({"log_every_steps": 0},
     "config log_every_steps=0: expected an integer >= 1"),
    ({"audio.decay_rate": 1.5},
     "config audio.decay_rate=1.5: expected a finite number in (0, 1]"),
    ({"audio.decay_rate": 0.0},
     "config audio.decay_rate=0.0: expected a finite number in (0, 1]"),
    ({"audio.decay_steps": 0},
     "config audio.decay_steps=0: expected an integer >= 1"),
    ({"audio.dropout_rate": 1.0},
     "config audio.dropout_rate=1.0: expected a finite number in [0, 1)"),
    ({"audio.optimizer": "sgd"},
     "config audio.optimizer='sgd': expected one of ['adam', 'adadelta']"),
    ({"audio.conv_widths": (8, 0)},
     "config audio.conv_widths=(8, 0): expected a non-empty list of positive"
     " integers"),
    ({"user.user_widths": ()},
     "config user.user_widths=(): expected a non-empty list of positive"
     " integers"),
    ({"dataset": "simulated"},
     "config dataset='simulated': expected 'contextual_tags/<config>'"),
    ({"split_strategy": "cold"},
     "config split_strategy='cold': expected one of ['', 'random',"
     " 'cold_user', 'cold_track', 'given']"),
    ({"seed": -1}, "config seed=-1: expected an integer >= 0"),
    ({"audio.checkpoint_every_steps": -1},
     "config audio.checkpoint_every_steps=-1: expected an integer >= 0"),
    ({"user.checkpoint_every_seconds": float("nan")},
     "config user.checkpoint_every_seconds=nan: expected a finite number in"
     " [0, inf)"),
    ({"split_fractions": (0.6, 0.2, 0.3)},
     "config split_fractions=(0.6, 0.2, 0.3): expected three positive"
     " numbers (train, validation, test) summing to 1"),
])
def test_bad_config_is_refused_and_never_saved(tmp_path, change, message):
  config = smoke.get_config()
  for key, value in change.items():
    section, _, name = key.rpartition(".")
    (config[section] if section else config)[name] = value
  workdir = tmp_path / "run"
  with pytest.raises(errors.ConfigError) as raised:
    common.save_config(config, str(workdir))
  assert str(raised.value) == message
  assert not workdir.exists()
  # The corrected rerun on the same workdir is not "another config".
  common.save_config(smoke.get_config(), str(workdir))
  common.save_config(smoke.get_config(), str(workdir))
  assert run_config.load(str(workdir / "config.json")) == json.loads(
      smoke.get_config().to_json_best_effort())


def test_unknown_dataset_config_and_misspelt_key_are_refused(tmp_path):
  config = smoke.get_config()
  config.dataset = "contextual_tags/simulatd"
  with pytest.raises(errors.ConfigError,
                     match=r"config dataset='contextual_tags/simulatd':"
                     r" expected a config of contextual_tags: \[.*'simulated'"):
    common.save_config(config, str(tmp_path))
  config = smoke.get_config()
  config.audio.learnig_rate = 0.1
  with pytest.raises(errors.ConfigError,
                     match=r"config audio.learnig_rate: unknown key; known:"
                     r" \[.*'batch_size'"):
    common.save_config(config, str(tmp_path))
  assert not os.listdir(tmp_path)


def test_types_are_checked_on_a_saved_config():
  config = json.loads(default.get_config().to_json_best_effort())
  run_config.validate(config, default.get_config())  # lists for tuples
  config["audio"]["batch_size"] = 32.0
  with pytest.raises(errors.ConfigError,
                     match=r"config audio.batch_size=32.0: expected an"
                     r" integer >= 1"):
    run_config.validate(config)
  config["audio"]["batch_size"] = True
  with pytest.raises(errors.ConfigError, match=r"audio.batch_size=True"):
    run_config.validate(config)


@pytest.mark.parametrize("module", ["default", "smoke", "paper"])
def test_shipped_configs_pass(module):
  configs = __import__(f"launch.configs.{module}", fromlist=["get_config"])
  run_config.validate(configs.get_config(), default.get_config(),
                      ["simulated", "simulated_small"])


def test_config_write_is_atomic_and_names_the_file(tmp_path, monkeypatch):
  _fail_fsync(monkeypatch)
  with pytest.raises(files.WriteError,
                     match=r"run/config.json: cannot write \(No space"):
    common.save_config(smoke.get_config(), str(tmp_path / "run"))
  assert os.listdir(tmp_path / "run") == []


def test_damaged_config_json_names_the_file(tmp_path):
  (tmp_path / "config.json").write_text('{"seed": 0,\n  "models": [')
  with pytest.raises(errors.ConfigError,
                     match=r"config.json, line 2: not valid JSON"):
    common.load_run_config(str(tmp_path))
  with pytest.raises(FileNotFoundError,
                     match=r"dataset_path.txt: missing; is .* a ctxtag run"):
    common.run_dataset_path(str(tmp_path))


# --- Training: settings and a non-finite loss ----------------------------


def test_batch_not_divisible_by_the_devices_names_the_setting(
    small_dataset_path, tmp_path, monkeypatch):
  monkeypatch.setattr(jax, "device_count", lambda: 3)
  with pytest.raises(errors.ConfigError) as raised:
    train.train_and_evaluate("user", smoke.get_config(), small_dataset_path,
                             str(tmp_path))
  assert str(raised.value) == (
      "config user.batch_size=8 is not divisible by the 3 devices; use a"
      " multiple of 3")


def test_training_settings_out_of_range_are_config_errors():
  config = smoke.get_config()
  config.audio.steps_per_dispatch = 0
  with pytest.raises(errors.ConfigError,
                     match=r"^config audio.steps_per_dispatch must be >= 1,"
                     r" got 0$"):
    train.dispatch_size("audio", config.audio)
  config.audio.optimizer = "sgd"
  with pytest.raises(errors.ConfigError,
                     match=r"^config optimizer='sgd' \(of a model section\):"
                     r" expected one of \['adadelta', 'adam'\]$"):
    train.make_optimizer(config.audio)


def _nan_losses(monkeypatch):
  monkeypatch.setattr(train, "example_losses",
                      lambda logits, *args: jnp.full(logits.shape[0], jnp.nan))


def test_non_finite_loss_before_any_checkpoint_says_none_was_saved(
    small_dataset_path, tmp_path, monkeypatch):
  _nan_losses(monkeypatch)
  with pytest.raises(FloatingPointError) as raised:
    train.train_and_evaluate("user", smoke.get_config(), small_dataset_path,
                             str(tmp_path))
  assert str(raised.value) == (
      "model 'user': non-finite training loss (nan) at step 1; stopped. No"
      f" checkpoint has been saved yet in {tmp_path}/user/checkpoints. A"
      " rerun of the same command stops here again: lower the learning rate"
      " (in a new --workdir) or check the data.")


def test_non_finite_loss_names_the_checkpoints_that_exist(
    small_dataset_path, tmp_path, monkeypatch):
  config = smoke.get_config()
  config.user.max_epochs = 1
  first = train.train_and_evaluate("user", config, small_dataset_path,
                                   str(tmp_path))
  os.remove(tmp_path / "user" / "summary.json")
  end = first["history"][-1]["step"]
  _nan_losses(monkeypatch)
  config.user.max_epochs = 2
  with pytest.raises(FloatingPointError) as raised:
    train.train_and_evaluate("user", config, small_dataset_path,
                             str(tmp_path))
  checkpoints = tmp_path / "user" / "checkpoints"
  assert str(raised.value).startswith(
      f"model 'user': non-finite training loss (nan) at step {end + 1};"
      f" stopped. Checkpoints kept: latest at step {end} ({checkpoints}/"
      f"latest), best at step {end} ({checkpoints}/best). A rerun")
