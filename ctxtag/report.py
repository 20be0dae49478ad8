"""A run's outputs: results.json, report.md beside the paper's published
figures, and PNG plots.

`write_outputs` renders all of them in memory first, then writes them
together through temporary files that are renamed only once every one is
complete: a full disk or a kill leaves the previous outputs as they were,
never a new results.json beside an old report.md.
"""

import contextlib
import io
import json
import os
import tempfile

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np

from ctxtag import evaluation
from ctxtag import files
from ctxtag import labels

# The paper's test-set figures (PAPER.md); ranges are given as their middle.
PAPER_PROTOCOLS = {
    "mo_mg": {"auc": 0.655, "recall": 0.94, "precision": 0.505, "f1": 0.655},
    "mo_sg": {"auc": 0.627, "recall": 0.957, "precision": 0.115, "f1": 0.204},
    "so_sg": {"auc": 0.627, "recall": 0.166, "precision": 0.156, "f1": 0.111},
    "user_sg": {"auc": 0.692, "recall": 0.24, "precision": 0.22, "f1": 0.21},
}
PAPER_SATISFACTION = {
    "audio": {"accuracy": 0.213, "recall": 0.204, "precision": 0.243,
              "f1": 0.216},
    "audio_user": {"accuracy": 0.254, "recall": 0.246, "precision": 0.296,
                   "f1": 0.261},
}
PROTOCOL_ROWS = (
    ("mo_mg", "MO-MG, audio (vs track's union of contexts)"),
    ("mo_sg", "MO-SG, audio (thresholded, vs user's context)"),
    ("so_sg", "SO-SG, audio (argmax, vs user's context)"),
    ("user_sg", "SG, audio + user"),
    ("user_only_sg", "SG, user only"),
    ("oracle_sg", "SG, oracle (true distribution)"),
)
MODEL_NAMES = {"audio": "audio", "audio_user": "audio + user",
               "user": "user only", "oracle": "oracle (true distribution)"}


def _cell(value) -> str:
  return "" if value is None or np.isnan(value) else f"{value:.3f}"


def protocol_table(results: dict) -> list[str]:
  lines = ["| protocol | AUC | recall | precision | F1 | paper AUC | paper"
           " recall | paper precision | paper F1 |",
           "|---|---|---|---|---|---|---|---|---|"]
  for key, title in PROTOCOL_ROWS:
    if key not in results:
      continue
    ours = results[key]["average"]
    paper = PAPER_PROTOCOLS.get(key, {})
    lines.append(f"| {title} | " + " | ".join(
        [_cell(ours[m]) for m in evaluation.METRICS]
        + [_cell(paper.get(m)) for m in evaluation.METRICS]) + " |")
  return lines


def satisfaction_table(results: dict) -> list[str]:
  lines = ["| model | accuracy | recall | precision | F1 | paper accuracy |"
           " paper recall | paper precision | paper F1 |",
           "|---|---|---|---|---|---|---|---|---|"]
  metrics = evaluation.SATISFACTION_METRICS
  for key, title in MODEL_NAMES.items():
    if key not in results["satisfaction"]:
      continue
    ours = results["satisfaction"][key]
    paper = PAPER_SATISFACTION.get(key, {})
    lines.append(f"| {title} | " + " | ".join(
        [_cell(ours[m]) for m in metrics]
        + [_cell(paper.get(m)) for m in metrics]) + " |")
  return lines


def per_context_table(protocol: dict) -> list[str]:
  lines = ["| context | AUC | recall | precision | F1 |", "|---|---|---|---|---|"]
  for label in labels.LABELS:
    row = protocol["per_label"][label]
    lines.append(f"| {label} | " + " | ".join(
        _cell(row[m]) for m in evaluation.METRICS) + " |")
  return lines


def report_text(results: dict, title: str, details: list[str],
                training: dict[str, dict]) -> str:
  """report.md's text: protocol averages, satisfaction, per-context tables.

  Undefined metrics (NaN or None) are empty cells.

  Args:
    results: the results dict (ctxtag.study.evaluate).
    title: first heading.
    details: lines about the run (data, config, time) shown under it.
    training: per-model training summaries (ctxtag.train).
  """
  lines = [f"# {title}", ""] + details + [
      "",
      "The paper's figures come from its real data (Deezer playlists and"
      " previews); this run's come from the data named above. Compare the"
      " patterns, not the numbers.",
      "", "## Protocols (mean over contexts)", ""] + protocol_table(results)
  lines += ["", "## User satisfaction (per user, then averaged)", ""]
  lines += satisfaction_table(results)
  if training:
    lines += ["", "## Training", "",
              "| model | epochs | best epoch | best validation loss |"
              " stopped early |", "|---|---|---|---|---|"]
    for name, summary in training.items():
      lines.append(f"| {MODEL_NAMES.get(name, name)} | {summary['epochs']} |"
                   f" {summary['best_epoch']} |"
                   f" {summary['best_validation_loss']:.4f} |"
                   f" {summary['stopped_early']} |")
  lines += ["", "## Per context", ""]
  for key, title_text in PROTOCOL_ROWS:
    if key in results:
      lines += [f"### {title_text}", ""] + per_context_table(results[key])
      lines.append("")
  return "\n".join(lines) + "\n"


def _heights(values) -> np.ndarray:
  """Bar heights; an undefined metric (None, NaN) draws no bar."""
  return np.array([np.nan if v is None else v for v in values], np.float64)


def _png(figure) -> bytes:
  buffer = io.BytesIO()
  figure.tight_layout()
  figure.savefig(buffer, format="png", dpi=100)
  plt.close(figure)
  return buffer.getvalue()


def plot_training_curves(training: dict[str, dict]) -> bytes:
  figure, axes = plt.subplots(1, max(len(training), 1),
                              figsize=(5 * max(len(training), 1), 3.5))
  for axis, (name, summary) in zip(np.atleast_1d(axes), training.items()):
    epochs = [h["epoch"] for h in summary["history"]]
    axis.plot(epochs, [h["train_loss"] for h in summary["history"]],
              label="train (epoch mean)")
    axis.plot(epochs, [h["validation_loss"] for h in summary["history"]],
              label="validation")
    axis.axvline(summary["best_epoch"], color="grey", linestyle=":",
                 label="best")
    axis.set(title=MODEL_NAMES.get(name, name), xlabel="epoch",
             ylabel="weighted loss")
    axis.legend()
  return _png(figure)


def plot_per_context(results: dict) -> bytes:
  keys = [(k, t) for k, t in PROTOCOL_ROWS if k in results]
  figure, axes = plt.subplots(len(keys), 1, figsize=(10, 2.6 * len(keys)),
                              squeeze=False)
  positions = np.arange(labels.NUM_LABELS)
  width = 0.2
  for axis, (key, title) in zip(axes[:, 0], keys):
    for offset, metric in enumerate(evaluation.METRICS):
      values = _heights([results[key]["per_label"][label][metric]
                         for label in labels.LABELS])
      axis.bar(positions + (offset - 1.5) * width, values, width,
               label=metric)
    axis.set(title=title, ylim=(0, 1))
    axis.set_xticks(positions, labels.LABELS)
  axes[0, 0].legend(ncol=4, loc="upper right")
  return _png(figure)


def plot_satisfaction(results: dict) -> bytes:
  models = [k for k in MODEL_NAMES if k in results["satisfaction"]]
  metrics = evaluation.SATISFACTION_METRICS
  figure, axis = plt.subplots(figsize=(8, 3.5))
  positions = np.arange(len(metrics))
  width = 0.8 / max(len(models), 1)
  for offset, key in enumerate(models):
    values = _heights([results["satisfaction"][key][m] for m in metrics])
    axis.bar(positions + offset * width, values, width,
             label=MODEL_NAMES[key])
  axis.set_xticks(positions + width * (len(models) - 1) / 2, metrics)
  axis.set(title="User satisfaction", ylim=(0, 1))
  axis.legend()
  return _png(figure)


def plots(results: dict, training: dict[str, dict]) -> dict[str, bytes]:
  """The PNG plots by file name; training curves only if `training`."""
  pngs = {}
  if training:
    pngs["training_curves.png"] = plot_training_curves(training)
  pngs["per_context.png"] = plot_per_context(results)
  pngs["satisfaction.png"] = plot_satisfaction(results)
  return pngs


def results_text(results: dict) -> str:
  """results.json's text: strict JSON, undefined metrics as null."""
  return json.dumps(files.strict_json(results), indent=2,
                    allow_nan=False) + "\n"


def _write_temporary(path: str, content: str | bytes) -> str:
  """Writes `content` to a synced temporary file beside `path`."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  handle, temporary = tempfile.mkstemp(
      dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
  try:
    with os.fdopen(handle, "wb") as f:
      f.write(content.encode() if isinstance(content, str) else content)
      f.flush()
      os.fsync(f.fileno())
  except BaseException:
    with contextlib.suppress(OSError):
      os.remove(temporary)
    raise
  return temporary


def write_together(contents: dict[str, str | bytes]) -> None:
  """Writes every file or none of them.

  files.atomic_open keeps each file whole; this keeps the set whole: every
  file is written and synced under a temporary name first, and the targets
  are replaced only once all of them are complete.

  Raises:
    files.WriteError: naming the file that could not be written. A failed
      write (a full disk) replaces no target; only a failed rename, which
      needs no space, could leave the first targets replaced.
  """
  temporaries = {}
  path = None
  try:
    for path, content in contents.items():
      temporaries[path] = _write_temporary(path, content)
    for path, temporary in list(temporaries.items()):
      os.replace(temporary, path)
      del temporaries[path]
  except OSError as error:
    raise files.WriteError(
        f"{path}: cannot write ({error.strerror or error})") from error
  finally:
    for temporary in temporaries.values():
      with contextlib.suppress(OSError):
        os.remove(temporary)


def write_outputs(output_dir: str, results: dict, title: str,
                  details: list[str], training: dict[str, dict]) -> list[str]:
  """Writes results.json, report.md and plots/*.png into `output_dir`.

  Everything is rendered before the first byte is written, and written with
  `write_together`, so a failure keeps the previous outputs whole.

  Returns:
    The paths written.
  """
  contents = {
      os.path.join(output_dir, "results.json"): results_text(results),
      os.path.join(output_dir, "report.md"): report_text(
          results, title, details, training)}
  for name, png in plots(results, training).items():
    contents[os.path.join(output_dir, "plots", name)] = png
  write_together(contents)
  return list(contents)
