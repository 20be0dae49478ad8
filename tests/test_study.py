"""The study (ctxtag.study) on degenerate ground truth: undefined metrics
are null, never NaN."""

import warnings

import numpy as np

from ctxtag import labels
from ctxtag import study
from ctxtag import run
from tests.fault_helpers import (HEADER, TRACK_HEADER, one_hot_rows,
    strict_json, track_rows, write_table)


def test_tiny_groundtruth_gives_null_not_nan(tmp_path):
  # Two pairs: track 0 is car for user 0, track 1 is gym for user 1. Every
  # other context has no positive: its AUC is undefined.
  gt = write_table(tmp_path / "gt.csv", HEADER, one_hot_rows([(0, 0, 0),
                                                          (1, 1, 1)]))
  scores = np.full((2, labels.NUM_LABELS), 0.1)
  scores[0, 0], scores[1, 1], scores[1, 0] = 0.9, 0.8, 0.3
  audio = write_table(tmp_path / "audio.csv", TRACK_HEADER, track_rows(scores))
  out = tmp_path / "out"
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # no "Mean of empty slice"
    run.evaluate_tables(str(out), run.Evaluation(
        study.CsvFiles(gt, {"audio": audio}), "tiny", []))
  results = strict_json(out / "results.json")
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
  gt = write_table(tmp_path / "gt.csv", HEADER, one_hot_rows([(0, 0, 2)]))
  audio = write_table(tmp_path / "audio.csv", TRACK_HEADER,
                 track_rows(np.full((1, labels.NUM_LABELS), 0.6)))
  out = tmp_path / "out"
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    run.evaluate_tables(str(out), run.Evaluation(
        study.CsvFiles(gt, {"audio": audio}), "one pair", []))
  results = strict_json(out / "results.json")
  for protocol in ("mo_mg", "mo_sg", "so_sg"):
    assert results[protocol]["average"]["auc"] is None
  # Thresholded at 0.5, every context is predicted: only happy is right.
  # One user: every resample draws it, so the intervals have no width.
  assert ("| MO-SG, audio (thresholded, vs user's context) |  |"
          " 0.100 [0.100, 0.100] | 0.100 [0.100, 0.100] |"
          " 0.100 [0.100, 0.100] |") in (out / "report.md").read_text()
  assert results["mo_sg"]["average"]["auc_ci"] == [None, None]
