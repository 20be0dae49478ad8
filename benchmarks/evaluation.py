r"""Evaluation of a paper-scale test set: launch.evaluate against a loop.

  python -m benchmarks.evaluation [--repeats=5] [--directory=DIR]

Writes synthetic CSVs (benchmarks/evaluation_data.py: 51,120 test pairs over
7,500 tracks and 4,000 users; audio, audio + user, user-only and oracle
predictions; validation and training ground truth) and times, in this
process and after the imports:

  * `launch.evaluate`'s CSV mode with every statistic: 1,000 bootstrap
    resamples of the users for every interval, ranking metrics, paired
    comparisons, thresholds tuned on validation, the share of the ceiling,
    results.json, report.md and the plots;
  * a straightforward implementation of the same per-user statistics: the
    tables read row by row, a Python loop over users, and a loop over the
    resamples (no AUC intervals, no tuned thresholds, no report);

and prints the quietest (fastest) of `--repeats` runs of each and their
ratio, plus the largest difference between the two implementations'
satisfaction and ranking intervals (the same resamples: it should be ~0).
"""

import contextlib
import csv
import io
import json
import os
import tempfile
import time

from absl import app
from absl import flags
import numpy as np

from benchmarks import evaluation_data
from ctxtag import labels
from ctxtag.evaluation import bootstrap
from launch import evaluate

_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed runs of each.")
_DIRECTORY = flags.DEFINE_string(
    "directory", None, "Where the tables go (default: a temporary folder).")

_MODELS = ("audio", "audio_user", "user", "oracle")


def _launch_flags(paths: dict[str, str], output_dir: str) -> list[str]:
  return ["evaluate", f"--groundtruth={paths['groundtruth']}",
          f"--audio_predictions={paths['audio']}",
          f"--user_predictions={paths['audio_user']}",
          f"--user_only_predictions={paths['user']}",
          f"--oracle_predictions={paths['oracle']}",
          f"--validation_groundtruth={paths['validation_groundtruth']}",
          f"--validation_audio_predictions={paths['validation_audio']}",
          f"--train_groundtruth={paths['train_groundtruth']}",
          f"--output_dir={output_dir}"]


def _run_launcher() -> float:
  start = time.perf_counter()
  with contextlib.redirect_stdout(io.StringIO()):
    evaluate.main(["evaluate"])
  return time.perf_counter() - start


def _read_rows(path: str, with_user: bool):
  """(ids, values) of a CSV, parsed row by row with the csv module."""
  with open(path, newline="") as f:
    rows = list(csv.reader(f))[1:]
  width = 2 if with_user else 1
  ids = np.array([[int(v) for v in row[:width]] for row in rows])
  values = np.array([[float(v) for v in row[width:]] for row in rows])
  return ids, values


def _per_user_loop(paths: dict[str, str]) -> dict:
  """Satisfaction and ranking per user with a loop over users, then the
  bootstrap with a loop over resamples: the obvious implementation."""
  ids, truth = _read_rows(paths["groundtruth"], True)
  truth = truth > 0
  track_ids, track_scores = _read_rows(paths["audio"], False)
  track_row = {int(song): row for row, song in enumerate(track_ids[:, 0])}
  scores = {"audio": track_scores[[track_row[s] for s in ids[:, 0]]]}
  for name in _MODELS[1:]:
    pair_ids, values = _read_rows(paths[name], True)
    row_of = {(int(s), int(u)): r for r, (s, u) in enumerate(pair_ids)}
    scores[name] = values[[row_of[(int(s), int(u))] for s, u in ids]]
  users = np.unique(ids[:, 1])
  per_user = {name: [] for name in _MODELS}
  for user in users:
    rows = np.flatnonzero(ids[:, 1] == user)
    g = truth[rows]
    active = np.flatnonzero(g.any(axis=0))
    for name in _MODELS:
      s = scores[name][rows]
      p = np.eye(labels.NUM_LABELS, dtype=bool)[s.argmax(axis=1)]
      tp = (g & p).sum(0)[active]
      fp = (~g & p).sum(0)[active]
      fn = (g & ~p).sum(0)[active]
      recall = tp / np.maximum(tp + fn, 1)
      precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 0)
      f1 = np.where(recall + precision > 0, 2 * recall * precision
                    / np.maximum(recall + precision, 1e-300), 0)
      accuracy = 1 - (fp + fn) / len(rows)
      rank = 1 + (s > s[g][:, None]).sum(axis=1)
      per_user[name].append([
          accuracy.mean(), recall.mean(), precision.mean(), f1.mean(),
          np.mean(rank <= 1), np.mean(rank <= 3), np.mean(1 / rank),
          np.mean(np.where(rank <= 3, 1 / np.log2(rank + 1), 0))])
  per_user = {name: np.array(values) for name, values in per_user.items()}
  resampled = {name: [] for name in _MODELS}
  for b in range(1000):
    drawn = bootstrap.draws(len(users), b, seed=0)
    for name in _MODELS:
      resampled[name].append(per_user[name][drawn].mean(axis=0))
  return {name: np.quantile(np.array(values), [0.025, 0.975], axis=0).T
          for name, values in resampled.items()}


def _largest_difference(output_dir: str, reference: dict) -> float:
  with open(os.path.join(output_dir, "results.json")) as f:
    results = json.load(f)
  largest = 0.0
  for name, intervals in reference.items():
    ours = [results["satisfaction"][name][f"{m}_ci"]
            for m in ("accuracy", "recall", "precision", "f1")]
    ours += [results["ranking"][name][f"{m}_ci"]
             for m in ("hit@1", "hit@3", "mrr", "ndcg@3")]
    largest = max(largest, float(np.abs(np.array(ours) - intervals).max()))
  return largest


def main(argv):
  del argv
  directory = _DIRECTORY.value or tempfile.mkdtemp(prefix="ctxtag_eval_")
  paths = evaluation_data.write_tables(directory)
  output_dir = os.path.join(directory, "out")
  flags.FLAGS(_launch_flags(paths, output_dir))
  print(f"tables in {directory}: {evaluation_data.TEST_PAIRS:,} test pairs,"
        f" {evaluation_data.TRACKS:,} tracks, {evaluation_data.USERS:,}"
        " users")
  launcher = [_run_launcher() for _ in range(_REPEATS.value)]
  print(f"launch.evaluate (every statistic):  best {min(launcher):.3f} s,"
        f" runs {', '.join(f'{t:.2f}' for t in launcher)}")
  loop = []
  for _ in range(max(1, _REPEATS.value // 2)):
    start = time.perf_counter()
    reference = _per_user_loop(paths)
    loop.append(time.perf_counter() - start)
  print(f"per-user loop (fewer statistics):  best {min(loop):.3f} s,"
        f" runs {', '.join(f'{t:.2f}' for t in loop)}")
  print(f"ratio loop / launch.evaluate: {min(loop) / min(launcher):.1f}x")
  print("largest difference of the satisfaction and ranking intervals:"
        f" {_largest_difference(output_dir, reference):.2e}")


if __name__ == "__main__":
  app.run(main)
