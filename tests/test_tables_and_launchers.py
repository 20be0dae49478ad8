"""CSV tables, the evaluation launcher and the one-command reproduction."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from ctxtag import evaluation
from ctxtag import files
from ctxtag import input_pipeline
from ctxtag import labels
from ctxtag import render
from ctxtag import report
from ctxtag import run
from ctxtag import study
from ctxtag import tables
from ctxtag import transfer
from ctxtag.configs import smoke
from tests import protocol_reference as reference

HEADER = "song_id,user_id," + ",".join(labels.LABELS)
TRACK_HEADER = "song_id," + ",".join(labels.LABELS)


def _write(path, header, rows):
  path.write_text(header + "\n" + "\n".join(rows) + "\n")
  return str(path)


def _points(result: dict) -> dict:
  """A protocol's or model's dict without its bootstrap intervals."""
  return {key: _points(value) if isinstance(value, dict) else value
          for key, value in result.items() if not key.endswith("_ci")}


@pytest.fixture
def csvs(tmp_path):
  rng = np.random.default_rng(1)
  song_P = np.repeat(np.arange(30), 4)
  user_P = np.arange(120) + 7 * song_P  # unique (song, user) keys
  label_P = rng.integers(0, 10, size=120)
  tables.write_groundtruth(str(tmp_path / "gt.csv"), song_P, user_P, label_P)
  audio = rng.uniform(size=(30, 10))
  tables.write(str(tmp_path / "audio.csv"), np.arange(30), audio)
  pairs = rng.dirichlet(np.ones(10), size=120)
  tables.write(str(tmp_path / "user.csv"), song_P, pairs, user_P)
  return {"dir": tmp_path, "song": song_P, "user": user_P, "label": label_P,
          "audio": audio, "pairs": pairs}


def test_study_on_csvs_matches_the_readable_protocols(csvs):
  d = csvs["dir"]
  results = study.evaluate(study.Inputs(
      tables.read_groundtruth(str(d / "gt.csv")),
      {"audio": tables.read(str(d / "audio.csv"), with_user=False),
       "audio_user": tables.read(str(d / "user.csv"), with_user=True)}))
  truth = np.eye(10, dtype=bool)[csvs["label"]]
  pair_audio = csvs["audio"].round(6)[csvs["song"]]
  union = np.zeros((30, 10), bool)
  union[csvs["song"], csvs["label"]] = True
  assert results["mo_mg"] == evaluation.mo_mg(union, csvs["audio"].round(6))
  for protocol, scores in (("mo_sg", pair_audio), ("so_sg", pair_audio),
                           ("user_sg", csvs["pairs"].round(6))):
    assert _points(results[protocol]) == reference.single_groundtruth(
        protocol, truth, scores)
  assert _points(results["satisfaction"]["audio"]) == evaluation.satisfaction(
      csvs["user"], truth, evaluation.one_hot_argmax(pair_audio))


@pytest.mark.slow
def test_evaluate_launcher_writes_results_and_report(csvs):
  d = csvs["dir"]
  out = d / "out"
  subprocess.run(
      [sys.executable, "-m", "launch.evaluate", f"--groundtruth={d}/gt.csv",
       f"--audio_predictions={d}/audio.csv",
       f"--user_predictions={d}/user.csv", f"--output_dir={out}"],
      check=True, capture_output=True, cwd=os.path.dirname(
          os.path.dirname(os.path.abspath(__file__))))
  results = json.loads((out / "results.json").read_text())
  for protocol in ("mo_mg", "mo_sg", "so_sg", "user_sg"):
    assert set(results[protocol]["average"]) >= {"auc", "recall",
                                                 "precision", "f1"}
    assert set(results[protocol]["per_label"]) == set(labels.LABELS)
  assert set(results["satisfaction"]) == {"audio", "audio_user"}
  assert set(results["satisfaction"]["audio"]) >= {
      "accuracy", "recall", "precision", "f1"}
  report = (out / "report.md").read_text()
  assert "User satisfaction" in report and "0.261" in report  # paper's F1
  assert (out / "plots" / "satisfaction.png").stat().st_size > 1000


@pytest.mark.slow
def test_launcher_with_every_table_writes_every_statistic(csvs):
  d = csvs["dir"]
  rng = np.random.default_rng(2)
  tables.write(str(d / "oracle.csv"), csvs["song"],
               rng.dirichlet(np.ones(10), size=120), csvs["user"])
  tables.write_groundtruth(str(d / "train.csv"), np.arange(50),
                           np.arange(50), rng.integers(0, 10, size=50))
  out = d / "out"
  subprocess.run(
      [sys.executable, "-m", "launch.evaluate", f"--groundtruth={d}/gt.csv",
       f"--audio_predictions={d}/audio.csv",
       f"--user_predictions={d}/user.csv",
       f"--user_only_predictions={d}/user.csv",
       f"--oracle_predictions={d}/oracle.csv",
       f"--validation_groundtruth={d}/gt.csv",
       f"--validation_audio_predictions={d}/audio.csv",
       f"--train_groundtruth={d}/train.csv", "--bootstrap_resamples=50",
       "--bootstrap_seed=4", f"--output_dir={out}"],
      check=True, capture_output=True, cwd=os.path.dirname(
          os.path.dirname(os.path.abspath(__file__))))
  results = json.loads((out / "results.json").read_text())
  assert results["bootstrap"]["resamples"] == 50
  assert results["bootstrap"]["seed"] == 4
  for model in ("audio", "audio_user", "user", "oracle"):
    assert set(results["ranking"][model]) == {
        "hit@1", "hit@3", "mrr", "ndcg@3", "hit@1_ci", "hit@3_ci", "mrr_ci",
        "ndcg@3_ci"}
    assert len(results["satisfaction"][model]["f1_ci"]) == 2
  for protocol in ("mo_sg", "so_sg", "user_sg", "user_only_sg", "oracle_sg",
                   "mo_sg_tuned"):
    low, high = results[protocol]["average"]["f1_ci"]
    assert low <= results[protocol]["average"]["f1"] <= high
  assert set(results["comparisons"]) == {
      "audio_user_vs_audio", "user_vs_audio", "audio_user_vs_user"}
  # The same table as audio + user and as user only: no difference.
  assert results["comparisons"]["audio_user_vs_user"]["f1"] == {
      "difference": 0.0, "ci": [0.0, 0.0], "p_value": 1.0}
  assert set(results["mo_mg_tuned"]["thresholds"]) == set(labels.LABELS)
  assert set(results["ceiling_share"]["share"]) == {"audio", "audio_user",
                                                    "user"}
  train_shares = np.bincount(np.argmax(tables.read_groundtruth(
      str(d / "train.csv")).values_RxC, axis=1), minlength=10) / 50
  np.testing.assert_allclose(
      list(results["ceiling_share"]["prior"].values()), train_shares)
  report = (out / "report.md").read_text()
  f1 = results["satisfaction"]["audio"]
  assert (f"| audio | {f1['accuracy']:.3f} [{f1['accuracy_ci'][0]:.3f},"
          f" {f1['accuracy_ci'][1]:.3f}] |") in report
  for heading in ("## Ranking of the true context", "## Paired comparisons",
                  "## Thresholds tuned on validation",
                  "## Share of the ceiling"):
    assert heading in report


def test_plain_and_unusual_csvs_read_the_same(tmp_path):
  # The fast reader (numpy) takes the plain file; the others go row by row
  # (tables._checked). Both must give the same table.
  rng = np.random.default_rng(3)
  scores = rng.dirichlet(np.ones(10), size=6)
  rows = [f"{s},{-u}," + ",".join(f"{v:.6f}" for v in row)
          for s, u, row in zip(range(6), range(100, 106), scores)]
  plain = _write(tmp_path / "plain.csv", HEADER, rows)
  variants = {
      "crlf_bom": ("\ufeff" + HEADER + "\r\n" + "\r\n".join(rows)
                   + "\r\n"),
      "blank_lines": HEADER + "\n\n" + "\n\n".join(rows) + "\n\n",
      "quoted": HEADER + "\n" + "\n".join(
          '"' + r.replace(",", '","') + '"' for r in rows) + "\n",
      "spaces_exponents": HEADER + "\n" + "\n".join(
          f"{s}, {-u} ," + ",".join(f"{v:.6e}" for v in row)
          for s, u, row in zip(range(6), range(100, 106), scores)) + "\n",
      "columns_reordered": ("user_id,song_id," + ",".join(labels.LABELS[::-1])
                            + "\n" + "\n".join(
                                f"{-u},{s}," + ",".join(
                                    f"{v:.6f}" for v in row[::-1])
                                for s, u, row in zip(range(6), range(100, 106),
                                                     scores)) + "\n"),
  }
  expected = tables.read(plain, with_user=True)
  assert tables._fast(plain, open(plain, "rb").read(),
                      ["song_id", "user_id"]) is not None
  np.testing.assert_array_equal(expected.line_R, np.arange(2, 8))
  for name, text in variants.items():
    path = tmp_path / f"{name}.csv"
    path.write_text(text, encoding="utf-8")
    table = tables.read(str(path), with_user=True)
    np.testing.assert_array_equal(table.song_id, expected.song_id)
    np.testing.assert_array_equal(table.user_id, expected.user_id)
    np.testing.assert_allclose(table.values_RxC, expected.values_RxC,
                               atol=1e-6, err_msg=name)
  blank = tables.read(str(tmp_path / "blank_lines.csv"), with_user=True)
  assert blank.line_R.tolist() == [3, 5, 7, 9, 11, 13]  # the file's lines
  # Values are parsed exactly as float() parses them.
  assert expected.values_RxC.tolist() == [[float(f"{v:.6f}") for v in row]
                                          for row in scores]


def test_align_finds_rows_in_any_order(csvs):
  truth = tables.read_groundtruth(str(csvs["dir"] / "gt.csv"))
  user = tables.read_pair_predictions(str(csvs["dir"] / "user.csv"))
  order = np.random.default_rng(0).permutation(len(user.song_id))
  shuffled = tables.Table("u.csv", user.song_id[order], user.user_id[order],
                          user.values_RxC[order])
  np.testing.assert_array_equal(
      tables.align(shuffled, truth.keys(), "(song, user)"), user.values_RxC)
  np.testing.assert_array_equal(
      tables.align(shuffled, (truth.song_id, truth.user_id), "(song, user)"),
      user.values_RxC)
  swapped = tables.Table("s.csv", user.user_id, user.song_id,
                         user.values_RxC)
  # Row 1's key (0, 0) reads the same swapped; row 2's (1, 0) is unknown.
  with pytest.raises(tables.TableError, match=r"s.csv, line 3: \(song,"
                     r" user\) id \(1, 0\) is not in the ground truth"):
    tables.align(swapped, truth.keys(), "(song, user)")


@pytest.mark.parametrize("header,row,message", [
    (HEADER.replace(",work,", ","), "1,2,0,0,0,0,0,0,0,0,1",
     r"gt.csv: missing columns \['work'\]"),
    (HEADER, "1,2,0,0,0,0,0,0,0,0,1", r"gt.csv, line 3: 11 fields"),
    (HEADER, "1,x,0,0,0,0,0,0,0,0,1,0", r"gt.csv, line 3: ids must be"),
    (HEADER, "1,2,0,0,0,0,0,0,0,0,1,1", r"gt.csv, line 3: .*exactly one 1"),
    (HEADER, "1,2,0,0,0,0,0,0,0,0,nan,1", r"gt.csv, line 3: non-finite"),
    (HEADER, "0,0,1,0,0,0,0,0,0,0,0,0", r"gt.csv, line 3: \(0, 0\) repeats"),
])
def test_bad_groundtruth_names_file_and_line(tmp_path, header, row, message):
  path = _write(tmp_path / "gt.csv", header,
                ["0,0,1,0,0,0,0,0,0,0,0,0", row])
  with pytest.raises(tables.TableError, match=message):
    tables.read_groundtruth(path)


def test_predictions_with_unknown_or_missing_ids_are_refused(csvs, tmp_path):
  truth = tables.read_groundtruth(str(csvs["dir"] / "gt.csv"))
  rows = [f"{s}," + ",".join(["0.5"] * 10) for s in range(30)]
  extra = _write(tmp_path / "extra.csv", TRACK_HEADER, rows + [
      "99," + ",".join(["0.5"] * 10)])
  with pytest.raises(tables.TableError,
                     match=r"extra.csv, line 32: song id 99 is not in the"):
    study.evaluate(study.Inputs(
        truth, {"audio": tables.read(extra, with_user=False)}))
  short = _write(tmp_path / "short.csv", TRACK_HEADER, rows[:-1])
  with pytest.raises(tables.TableError, match=r"short.csv: no row for 1 song"):
    study.evaluate(study.Inputs(
        truth, {"audio": tables.read(short, with_user=False)}))
  inf = _write(tmp_path / "inf.csv", TRACK_HEADER,
               rows[:3] + ["3," + ",".join(["inf"] * 10)])
  with pytest.raises(tables.TableError, match=r"inf.csv, line 5: non-finite"):
    tables.read(inf, with_user=False)


@pytest.mark.slow
def test_reproduce_runs_end_to_end_and_reuses_a_finished_run(tmp_path,
                                                           smoke_run):
  config = smoke.get_config()
  workdir = str(tmp_path / "run")
  # The session's smoke reproduction, copied: its every file comes back.
  shutil.copytree(smoke_run, workdir)
  results = run.reproduce(config, workdir)
  for key in ("mo_mg", "mo_sg", "so_sg", "user_sg", "user_only_sg",
              "oracle_sg"):
    assert key in results
  assert set(results["satisfaction"]) == {"audio", "audio_user", "user",
                                          "oracle"}
  # The statistics beyond the paper, from the run's own files: validation
  # predictions for the tuned thresholds, the train split for the prior.
  assert set(results["ranking"]) == {"audio", "audio_user", "user", "oracle"}
  assert "thresholds" in results["mo_sg_tuned"]
  train = input_pipeline.load_split(
      open(os.path.join(workdir, "dataset_path.txt")).read().strip(), "train")
  np.testing.assert_allclose(
      list(results["ceiling_share"]["prior"].values()),
      np.bincount(train.label_P, minlength=10) / len(train.label_P))
  saved = json.load(open(os.path.join(workdir, "results.json")))
  assert saved == files.strict_json(results)
  for name in ("training_curves", "per_context", "satisfaction"):
    assert os.path.getsize(os.path.join(workdir, "plots", f"{name}.png")) > 0
  test_audio = open(os.path.join(workdir, "predictions", "test_audio.csv"))
  assert test_audio.readline().strip() == TRACK_HEADER
  test_user = open(os.path.join(workdir, "predictions", "test_audio_user.csv"))
  assert test_user.readline().strip() == HEADER
  # The oracle is the best anyone can do in expectation; on 20 test tracks
  # only check that it is a real score.
  assert 0 < results["satisfaction"]["oracle"]["f1"] <= 1

  stamp = os.path.getmtime(os.path.join(workdir, "audio", "summary.json"))
  again = run.reproduce(config, workdir)
  assert files.strict_json(again) == files.strict_json(results)  # NaN != NaN
  assert os.path.getmtime(
      os.path.join(workdir, "audio", "summary.json")) == stamp

  # The late fusion's weights are the audio + user model's best state's.
  train_split = input_pipeline.load_split(
      open(os.path.join(workdir, "dataset_path.txt")).read().strip(), "train")
  best = transfer.restore_best("audio_user", config, workdir,
                               train_split.mel_shape[0])
  assert results["fusion_weights"] == {
      "audio": float(best.params["audio_weight"]),
      "user": float(best.params["user_weight"]),
      "typical_user": float(best.params["prior_weight"])}
  first_report = open(os.path.join(workdir, "report.md")).read()
  header = first_report.split("\n\n")[1]  # the lines under the title
  assert "seed 0" in header and "contextual_tags/simulated_small" in header

  evaluated = subprocess.run(
      [sys.executable, "-m", "launch.evaluate", f"--workdir={workdir}",
       "--split=validation"], check=True, capture_output=True, text=True,
      cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  validation = json.load(open(os.path.join(workdir, "results.json")))
  assert validation != results  # the validation split's figures
  validation_report = open(os.path.join(workdir, "report.md")).read()
  assert "validation split" in validation_report
  # The header keeps what the reproduction said of the data.
  assert validation_report.split("\n\n")[1] == header
  # The terminal gets a summary naming every file written, not the report.
  summary = evaluated.stdout.splitlines()
  assert len(summary) <= 25 and "## Per context" not in evaluated.stdout
  assert summary[0].startswith(
      "ctxtag run: contextual_tags/simulated_small, validation split (")
  for path in report.output_paths(workdir, validation, True):
    assert any(line.endswith(path) for line in summary), path

  other = smoke.get_config()
  other.seed = 1
  with pytest.raises(ValueError, match="made with another config"):
    run.reproduce(other, workdir)


def test_report_cells_intervals_and_p_values():
  values = {"f1": 0.2914, "f1_ci": [0.2801, 0.3025], "auc": float("nan"),
            "auc_ci": [0.1, 0.2], "recall": 0.5, "recall_ci": [None, None]}
  assert report._cell_ci(values, "f1") == "0.291 [0.280, 0.302]"
  assert report._cell_ci(values, "auc") == ""  # undefined: an empty cell
  assert report._cell_ci(values, "recall") == "0.500"  # no interval
  assert [render.p_value_text(p) for p in (0.0271, 6.3e-4, 0.0, None)] == [
      "0.027", "6.3e-04", "< 1e-300", ""]
  # Error bars: the distances from each bar down and up to its interval.
  bars = report._error_bars(values, ["f1"], np.array([0.2914]))
  np.testing.assert_allclose(bars, [[0.2914 - 0.2801], [0.3025 - 0.2914]])
  assert report._error_bars({"f1": 0.3}, ["f1"], np.array([0.3])) is None


@pytest.mark.parametrize("values,decimals", [
    ("0.100000," * 9 + "1.000000", 6),  # as tables.write writes them
    ("0.1," * 9 + "1.0", 1),
    ("0.1," * 9 + "1.00", None),  # decimals differ: floats are parsed
    ("0.1," * 9 + "1", None),  # a field without a "."
    ("0.1," * 9 + "1.e", None),
    ("0.1," * 9 + "1.0e0", None),
])
def test_fixed_decimals_only_when_every_label_field_has_them(values, decimals):
  body = f"1,2,{values}\n3,4,{values}\n".encode()
  assert tables._fixed_decimals(body, 12) == decimals


def test_an_id_with_a_dot_is_refused_not_shifted(tmp_path):
  # Ten dots on the line, one in an id and none in "1": the ids' integer
  # parse refuses it, and the row-by-row reader names the line.
  path = _write(tmp_path / "gt.csv", HEADER, [
      "1.5,2," + "0.1," * 8 + "0.2,1", "3,4," + "0.1," * 9 + "0.1"])
  with pytest.raises(tables.TableError, match=r"gt.csv, line 2: ids must be"):
    tables.read(path, with_user=True)


@pytest.mark.slow
def test_reproduce_launcher_takes_the_statistics_flags(tmp_path, smoke_run):
  workdir = str(tmp_path / "run")
  shutil.copytree(smoke_run, workdir)  # finished: reused, re-evaluated
  process = subprocess.run(
      [sys.executable, "-m", "launch.reproduce", f"--workdir={workdir}",
       "--config=ctxtag/configs/smoke.py", "--bootstrap_resamples=40",
       "--bootstrap_seed=2", "--confidence=0.9", "--print_report"],
      check=True, capture_output=True, text=True, timeout=300,
      cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  results = json.load(open(os.path.join(workdir, "results.json")))
  assert {k: results["bootstrap"][k] for k in (
      "resamples", "seed", "confidence")} == {
          "resamples": 40, "seed": 2, "confidence": 0.9}
  text = open(os.path.join(workdir, "report.md")).read()
  assert "| comparison | metric | difference [90% interval] |" in text
  assert "Intervals in brackets: 90% bootstrap over users (40 resamples" in text
  # --print_report prints report.md, then the summary ends the output.
  assert text in process.stdout
  summary = process.stdout[process.stdout.index(text) + len(text):]
  lines = summary.strip().splitlines()
  assert len(lines) <= 25
  f1 = results["satisfaction"]["audio_user"]
  assert any(f"{f1['f1']:.3f} [{f1['f1_ci'][0]:.3f}, {f1['f1_ci'][1]:.3f}]"
             in line for line in lines)
  assert "user satisfaction F1 [90% interval over users]" in summary


@pytest.mark.slow
def test_evaluate_launcher_scores_mo_mg_over_every_split(csvs):
  d = csvs["dir"]
  rng = np.random.default_rng(4)
  # Training pairs of the test tracks 0-19 and of tracks the test lacks.
  train_song = np.concatenate([np.arange(20), 100 + np.arange(10)])
  train_label = rng.integers(0, 10, size=30)
  tables.write_groundtruth(str(d / "train.csv"), train_song,
                           1000 + np.arange(30), train_label)
  out = d / "out"
  args = [sys.executable, "-m", "launch.evaluate", f"--groundtruth={d}/gt.csv",
          f"--audio_predictions={d}/audio.csv", f"--output_dir={out}",
          "--mo_mg_truth=all_splits"]
  refused = subprocess.run(args, capture_output=True, text=True,
                           cwd=os.path.dirname(os.path.dirname(
                               os.path.abspath(__file__))))
  assert refused.returncode == 1
  assert "mo_mg_truth 'all_splits'" in refused.stderr
  process = subprocess.run(
      args + [f"--train_groundtruth={d}/train.csv",
              f"--validation_groundtruth={d}/gt.csv",
              f"--validation_audio_predictions={d}/audio.csv"],
      check=True, capture_output=True, text=True,
      cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  results = json.loads((out / "results.json").read_text())
  union = np.zeros((30, 10), bool)
  union[csvs["song"], csvs["label"]] = True
  union[train_song[:20], train_label[:20]] = True
  expected = evaluation.mo_mg(union, csvs["audio"].round(6))
  assert results["mo_mg_truth"] == "all_splits"
  np.testing.assert_allclose(results["mo_mg"]["average"]["f1"],
                             expected["average"]["f1"])
  assert "over its pairs in every split" in (out / "report.md").read_text()
  assert "ground truth: all_splits" in process.stdout
