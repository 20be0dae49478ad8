"""report.md and PNG plots of a run, beside the paper's published figures."""

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np

from ctxtag import evaluation
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


def write_report(path: str, results: dict, title: str,
                 details: list[str], training: dict[str, dict]) -> None:
  """Writes report.md: protocol averages, satisfaction, per-context tables.

  Args:
    path: where to write.
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
  with open(path, "w") as f:
    f.write("\n".join(lines) + "\n")


def plot_training_curves(path: str, training: dict[str, dict]) -> None:
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
  figure.tight_layout()
  figure.savefig(path, dpi=100)
  plt.close(figure)


def plot_per_context(path: str, results: dict) -> None:
  keys = [(k, t) for k, t in PROTOCOL_ROWS if k in results]
  figure, axes = plt.subplots(len(keys), 1, figsize=(10, 2.6 * len(keys)),
                              squeeze=False)
  positions = np.arange(labels.NUM_LABELS)
  width = 0.2
  for axis, (key, title) in zip(axes[:, 0], keys):
    for offset, metric in enumerate(evaluation.METRICS):
      values = [results[key]["per_label"][label][metric]
                for label in labels.LABELS]
      axis.bar(positions + (offset - 1.5) * width, values, width,
               label=metric)
    axis.set(title=title, ylim=(0, 1))
    axis.set_xticks(positions, labels.LABELS)
  axes[0, 0].legend(ncol=4, loc="upper right")
  figure.tight_layout()
  figure.savefig(path, dpi=100)
  plt.close(figure)


def plot_satisfaction(path: str, results: dict) -> None:
  models = [k for k in MODEL_NAMES if k in results["satisfaction"]]
  metrics = evaluation.SATISFACTION_METRICS
  figure, axis = plt.subplots(figsize=(8, 3.5))
  positions = np.arange(len(metrics))
  width = 0.8 / max(len(models), 1)
  for offset, key in enumerate(models):
    values = [results["satisfaction"][key][m] for m in metrics]
    axis.bar(positions + offset * width, values, width,
             label=MODEL_NAMES[key])
  axis.set_xticks(positions + width * (len(models) - 1) / 2, metrics)
  axis.set(title="User satisfaction", ylim=(0, 1))
  axis.legend()
  figure.tight_layout()
  figure.savefig(path, dpi=100)
  plt.close(figure)


def write_plots(directory: str, results: dict,
                training: dict[str, dict]) -> list[str]:
  """Writes the PNG plots into `directory`; returns their paths."""
  os.makedirs(directory, exist_ok=True)
  paths = []
  if training:
    paths.append(os.path.join(directory, "training_curves.png"))
    plot_training_curves(paths[-1], training)
  paths.append(os.path.join(directory, "per_context.png"))
  plot_per_context(paths[-1], results)
  paths.append(os.path.join(directory, "satisfaction.png"))
  plot_satisfaction(paths[-1], results)
  return paths
