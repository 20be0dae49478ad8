"""Writing a run's outputs (ctxtag.report): atomic, and a full disk keeps
every earlier output and names the file."""

import errno
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from ctxtag import files
from ctxtag import labels
from ctxtag import report
from ctxtag import run
from ctxtag import study
from ctxtag import tables
from ctxtag.evaluation import bootstrap
from tests.fault_helpers import REPO, fail_fsync, strict_json


def _evaluate(out, directory, audio: str, title: str) -> dict:
  """Evaluates gt.csv and the audio CSV `audio` of `directory` into `out`."""
  return run.evaluate_tables(str(out), run.Evaluation(study.CsvFiles(
      str(directory / "gt.csv"), {"audio": str(directory / audio)}), title,
                                                      []))


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
  _evaluate(out, tmp_path, "audio.csv", "first")
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
                         "plots/satisfaction.png", "plots/retrieval.png",
                         "plots/paper_comparison.png"}
  write_temporary = report._write_temporary

  def full_disk(path, content):
    if path.endswith(failing):
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return write_temporary(path, content)

  monkeypatch.setattr(report, "_write_temporary", full_disk)
  with pytest.raises(files.WriteError) as raised:
    _evaluate(out, tmp_path, "other.csv", "second")
  failed_path = os.path.join(str(out), "plots" if failing.endswith(".png")
                             else "", failing)
  assert str(raised.value) == (
      f"{os.path.normpath(failed_path)}: cannot write (No space left on"
      " device)")
  assert _snapshot(out) == before  # nothing replaced, no temporary left


def test_outputs_replace_earlier_ones_when_the_disk_has_room(evaluated):
  tmp_path, out = evaluated
  first = _snapshot(out)
  _evaluate(out, tmp_path, "other.csv", "second")
  second = _snapshot(out)
  assert set(second) == set(first)
  assert second["results.json"] != first["results.json"]
  assert second["report.md"].startswith(b"# second")
  assert second["plots/per_context.png"].startswith(b"\x89PNG")


def test_full_disk_while_writing_a_table_names_it(tmp_path, monkeypatch):
  path = str(tmp_path / "audio.csv")
  tables.write(path, [0], np.full((1, 10), 0.5))
  fail_fsync(monkeypatch)
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


@pytest.mark.slow
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
  strict_json(tmp_path / "after" / "results.json")


# --- What a person reads: the summary, the report's tables, the plots ------


def _world_results(confidence=0.95):
  """Results of three models on a small world where context 2 (happy) has
  no pair, and training summaries of two models."""
  rng = np.random.default_rng(5)
  song = np.repeat(np.arange(40), 3)
  user = np.arange(120) % 30
  label = rng.choice([c for c in range(10) if c != 2], size=120)
  truth = tables.Table("gt.csv", song, user,
                       np.eye(10)[label])
  audio = tables.Table("audio.csv", np.arange(40), None,
                       rng.uniform(size=(40, 10)))
  pairs = {name: tables.Table(f"{name}.csv", song, user,
                              rng.dirichlet(np.ones(10), size=120))
           for name in ("audio_user", "user", "oracle")}
  results = study.evaluate(study.Inputs(
      truth, dict(pairs, audio=audio),
      settings=bootstrap.Settings(50, 1, confidence)))
  training = {
      "audio": {"epochs": 4, "best_epoch": 4, "best_validation_loss": 0.9,
                "stopped_early": False,
                "history": [{"epoch": e, "train_loss": 1 / e,
                             "validation_loss": 1.1 / e} for e in range(1, 5)]},
      "user": {"epochs": 5, "best_epoch": 3, "best_validation_loss": 0.8,
               "stopped_early": True,
               "history": [{"epoch": e, "train_loss": 1 / e,
                            "validation_loss": 0.8 + abs(e - 3) / 10}
                           for e in range(1, 6)]}}
  return results, training, label


def test_summary_is_short_and_quotes_the_results(tmp_path):
  results, training, _ = _world_results()
  results["fusion_weights"] = {"audio": 0.84, "user": 1.2261,
                               "typical_user": -0.1}
  paths = report.write_outputs(str(tmp_path), results, "t", [], training)
  text = report.summary_text(results, "heading", paths)
  lines = text.splitlines()
  assert len(lines) <= 25
  assert lines[0] == "heading (30 users)"
  for model, name in (("audio", "audio"), ("audio_user", "audio + user"),
                      ("user", "user only"),
                      ("oracle", "oracle (true distribution)")):
    values = results["satisfaction"][model]
    low, high = values["f1_ci"]
    assert any(line.startswith(f"  {name}  ") and
               f"{values['f1']:.3f} [{low:.3f}, {high:.3f}]" in line
               for line in lines), model
  # The paper's question, in its order: a - b, the interval, Wilcoxon p.
  rows = [line for line in lines if " vs " in line]
  assert [row.split("  ")[1] for row in rows] == [
      "audio + user vs audio", "audio + user vs user only",
      "user only vs audio"]
  for row, key in zip(rows, report.QUESTION_COMPARISONS):
    entry = results["comparisons"][key]["f1"]
    assert f"{entry['difference']:+.3f} [{entry['ci'][0]:.3f}," in row
  assert ("late fusion weights: audio a = 0.840, user b = 1.226, typical"
          " user c = -0.100") in lines
  assert f"full report: {tmp_path}/report.md" in lines
  for path in paths:
    if not path.endswith("report.md"):
      assert any(line.endswith(path) for line in lines)
  assert sorted(paths) == sorted(
      str(p) for p in tmp_path.rglob("*") if p.is_file())


def test_report_says_the_intervals_confidence_and_marks_empty_contexts():
  results, training, label = _world_results(confidence=0.9)
  results["fusion_weights"] = {"audio": 0.5, "user": 1.0,
                               "typical_user": 0.25}
  text = report.report_text(results, "t", [], training)
  assert "| comparison | metric | difference [90% interval] |" in text
  assert "95%" not in text
  pairs = np.bincount(label, minlength=10)
  assert results["context_counts"]["pairs"] == dict(zip(labels.LABELS,
                                                        pairs.tolist()))
  assert pairs[2] == 0
  # happy has no pair: no AUC, zeros counted in the means, marked.
  assert ("| happy |  | 0.000 | 0.000 | 0.000 | 0 (none: counted 0) |"
          in text)
  assert "| gym | " in text and f" | {pairs[1]:,} |" in text
  assert ("MO-MG's ground truth: each track's contexts over the evaluated"
          in text)
  assert "| 0.500 | 1.000 | 0.250 |" in text  # the fusion's weights


def test_training_curves_mark_best_and_stop_on_integer_epochs():
  _, training, _ = _world_results()
  figure = report.training_curves_figure(training)
  audio, user = figure.axes
  figure.canvas.draw()  # the tick locators run at drawing
  for axis in (audio, user):
    ticks = [t for t in axis.get_xticks()
             if axis.get_xlim()[0] <= t <= axis.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks)
  assert audio.get_title() == "audio" and user.get_title() == "user only"
  legend = [text.get_text() for text in user.get_legend().get_texts()]
  assert "best: epoch 3" in legend
  assert ("stopped after epoch 5: no better\nvalidation loss for 2 epochs"
          in legend)
  stop = [line for line in user.get_lines()
          if line.get_label().startswith("stopped")][0]
  assert list(stop.get_xdata()) == [5, 5]
  assert "ran all 4 epochs (max_epochs)" in [
      text.get_text() for text in audio.get_legend().get_texts()]


def test_plots_name_protocols_and_models_in_words():
  results, _, _ = _world_results()
  figure = report.per_context_figure(results)
  rows = [t.get_text() for t in figure.axes[0].get_yticklabels()]
  words = {
      "mo_mg": "audio, multi-label vs track's contexts (MO-MG)",
      "mo_sg": "audio, thresholded vs user's context (MO-SG)",
      "so_sg": "audio, top context vs user's context (SO-SG)",
      "user_sg": "audio + user (SG)",
      "user_only_sg": "user only (SG)",
      "oracle_sg": "oracle, true distribution (SG)",
      "mo_mg_tuned": "audio, MO-MG, thresholds tuned on validation",
      "mo_sg_tuned": "audio, MO-SG, thresholds tuned on validation"}
  assert rows == [name for key, name in words.items() if key in results]
  assert "audio + user (SG)" in rows and "user_sg" not in rows
  satisfaction = report.plot_satisfaction(results)
  assert satisfaction.startswith(b"\x89PNG")


def test_paper_comparison_sets_the_runs_bars_beside_the_papers():
  results, _, _ = _world_results()
  figure = report.paper_comparison_figure(results)
  protocol_axes, satisfaction_axes = figure.axes[:4], figure.axes[4:8]
  keys = ("mo_mg", "mo_sg", "so_sg", "user_sg")
  for axis, metric in zip(protocol_axes, ("auc", "recall", "precision",
                                          "f1")):
    ours, paper = [list(c.datavalues) for c in axis.containers
                   if hasattr(c, "datavalues")]
    np.testing.assert_allclose(
        ours, [results[k]["average"][metric] for k in keys])
    assert paper == [report.PAPER_PROTOCOLS[k][metric] for k in keys]
  for axis, metric in zip(satisfaction_axes, ("accuracy", "recall",
                                              "precision", "f1")):
    ours, paper = [list(c.datavalues) for c in axis.containers
                   if hasattr(c, "datavalues")]
    np.testing.assert_allclose(
        ours, [results["satisfaction"][m][metric]
               for m in ("audio", "audio_user")])
    assert paper == [report.PAPER_SATISFACTION[m][metric]
                     for m in ("audio", "audio_user")]
  assert [t.get_text() for t in satisfaction_axes[0].get_xticklabels()] == [
      "audio", "audio + user"]
