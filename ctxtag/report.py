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

# Figures made directly, not through pyplot: no GUI backend, no global
# figure registry, and PNGs rendered by Agg.
from matplotlib import figure as mpl_figure
import numpy as np

from ctxtag import evaluation
from ctxtag import files
from ctxtag import labels
from ctxtag.evaluation import ranking

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
    ("mo_mg_tuned", "MO-MG, audio, thresholds tuned on validation"),
    ("mo_sg_tuned", "MO-SG, audio, thresholds tuned on validation"),
)
MODEL_NAMES = {"audio": "audio", "audio_user": "audio + user",
               "user": "user only", "oracle": "oracle (true distribution)"}


def _cell(value) -> str:
  return "" if value is None or np.isnan(value) else f"{value:.3f}"


def _cell_ci(values: dict, metric: str) -> str:
  """"0.291 [0.280, 0.302]": the value and its interval, where it has one."""
  cell = _cell(values.get(metric))
  low, high = values.get(f"{metric}_ci") or (None, None)
  if cell and low is not None and high is not None and not (
      np.isnan(low) or np.isnan(high)):
    cell += f" [{low:.3f}, {high:.3f}]"
  return cell


def _p_value(value) -> str:
  if value is None or np.isnan(value):
    return ""
  if value == 0:  # below the smallest float scipy can return
    return "< 1e-300"
  return f"{value:.3f}" if value >= 0.001 else f"{value:.1e}"


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
        [_cell_ci(ours, m) for m in evaluation.METRICS]
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
        [_cell_ci(ours, m) for m in metrics]
        + [_cell(paper.get(m)) for m in metrics]) + " |")
  return lines


def ranking_table(results: dict) -> list[str]:
  lines = ["| model | hit@1 | hit@3 | MRR | NDCG@3 |", "|---|---|---|---|---|"]
  for key, title in MODEL_NAMES.items():
    if key in results.get("ranking", {}):
      lines.append(f"| {title} | " + " | ".join(
          _cell_ci(results["ranking"][key], m) for m in ranking.METRICS)
                   + " |")
  return lines


def comparison_table(results: dict) -> list[str]:
  lines = ["| comparison | metric | difference [95% interval] | Wilcoxon p |",
           "|---|---|---|---|"]
  for key, metrics in results.get("comparisons", {}).items():
    a, _, b = key.partition("_vs_")
    for metric, entry in metrics.items():
      lines.append(
          f"| {MODEL_NAMES.get(a, a)} - {MODEL_NAMES.get(b, b)} | {metric} | "
          + _cell_ci({"d": entry["difference"], "d_ci": entry["ci"]}, "d")
          + f" | {_p_value(entry['p_value'])} |")
  return lines


def thresholds_table(results: dict) -> list[str]:
  keys = [k for k in ("mo_mg_tuned", "mo_sg_tuned") if k in results]
  lines = ["| context | " + " | ".join(
      f"MO-{k.split('_')[1].upper()} threshold" for k in keys) + " |",
           "|---|" + "---|" * len(keys)]
  for label in labels.LABELS:
    lines.append(f"| {label} | " + " | ".join(
        _cell(results[k]["thresholds"][label]) for k in keys) + " |")
  return lines


def ceiling_table(ceiling: dict) -> list[str]:
  models = list(ceiling["share"])
  lines = ["| metric | prior | oracle | " + " | ".join(
      f"{MODEL_NAMES.get(m, m)} share" for m in models) + " |",
           "|---|---|---|" + "---|" * len(models)]
  for group, metrics in ceiling["baseline"].items():
    for metric, baseline in metrics.items():
      lines.append(
          f"| {group} {metric} | {_cell(baseline)} |"
          f" {_cell(ceiling['oracle'][group][metric])} | " + " | ".join(
              _cell(ceiling["share"][m][group][metric]) for m in models)
          + " |")
  return lines


def statistics_sections(results: dict) -> list[str]:
  """report.md's sections beyond the paper: ranking, comparisons, tuned
  thresholds, share of the ceiling."""
  lines = []
  if results.get("ranking"):
    lines += ["", "## Ranking of the true context (per user, then averaged)",
              ""] + ranking_table(results)
  if results.get("comparisons"):
    lines += ["", "## Paired comparisons over the same users", ""]
    lines += comparison_table(results)
  if "mo_mg_tuned" in results:
    lines += ["", "## Thresholds tuned on validation (max F1 per context)",
              ""] + thresholds_table(results)
  if "ceiling_share" in results:
    lines += ["", "## Share of the ceiling: (model - prior) / (oracle -"
              " prior)", ""] + ceiling_table(results["ceiling_share"])
  return lines


def _bootstrap_line(results: dict) -> list[str]:
  settings = results.get("bootstrap")
  if not settings or not settings["resamples"]:
    return []
  return ["", f"Intervals in brackets: {settings['confidence']:.0%} bootstrap"
          f" over users ({settings['resamples']:,} resamples, seed"
          f" {settings['seed']}); AUC intervals are {settings['auc']}."]


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
      ] + _bootstrap_line(results) + [
      "", "## Protocols (mean over contexts)", ""] + protocol_table(results)
  lines += ["", "## User satisfaction (per user, then averaged)", ""]
  lines += satisfaction_table(results)
  lines += statistics_sections(results)
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


def _png(figure, tight: bool = True) -> bytes:
  buffer = io.BytesIO()
  if tight:
    figure.tight_layout()
  figure.savefig(buffer, format="png", dpi=100)
  return buffer.getvalue()


def plot_training_curves(training: dict[str, dict]) -> bytes:
  figure = mpl_figure.Figure(figsize=(5 * max(len(training), 1), 3.5))
  axes = figure.subplots(1, max(len(training), 1))
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
  """One heat map: protocols (rows) by contexts (columns), a block of
  columns per metric.

  A heat map rather than bars: 8 protocols x 10 contexts x 4 metrics are 320
  bars, slow to draw (over a second at paper scale) and hard to compare; one
  axes also draws faster than four. Undefined metrics are blank; the numbers
  are in report.md.
  """
  keys = [key for key, _ in PROTOCOL_ROWS if key in results]
  block = labels.NUM_LABELS + 1  # a blank column between metrics
  grid = np.full((len(keys), block * len(evaluation.METRICS) - 1), np.nan)
  for m, metric in enumerate(evaluation.METRICS):
    grid[:, m * block:m * block + labels.NUM_LABELS] = [
        _heights([results[key]["per_label"][label][metric]
                  for label in labels.LABELS]) for key in keys]
  height = 0.3 * len(keys) + 1.5
  figure = mpl_figure.Figure(figsize=(14, height))
  # Fixed margins: tight_layout measures every label and doubles the time.
  box = [0.09, 0.95 / height, 0.84, 1 - 1.3 / height]
  axis = figure.add_axes(box)
  image = axis.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto",
                      interpolation="nearest")
  axis.set_xticks([m * block + c for m in range(len(evaluation.METRICS))
                   for c in range(labels.NUM_LABELS)],
                  list(labels.LABELS) * len(evaluation.METRICS), rotation=90,
                  fontsize=8)
  axis.set_yticks(np.arange(len(keys)), keys, fontsize=8)
  for m, metric in enumerate(evaluation.METRICS):
    axis.text(m * block + (labels.NUM_LABELS - 1) / 2, -0.7, metric,
              ha="center", va="bottom")
  figure.colorbar(image, cax=figure.add_axes([0.94, box[1], 0.01, box[3]]))
  return _png(figure, tight=False)


def _error_bars(values: dict, metrics, heights) -> np.ndarray | None:
  """(2, metrics) distances from each bar to its interval's ends."""
  if not all(values.get(f"{m}_ci") for m in metrics):
    return None
  ends = np.array([_heights(values[f"{m}_ci"]) for m in metrics]).T
  return np.nan_to_num(np.abs(ends - heights))


def plot_satisfaction(results: dict) -> bytes:
  models = [k for k in MODEL_NAMES if k in results["satisfaction"]]
  metrics = evaluation.SATISFACTION_METRICS
  figure = mpl_figure.Figure(figsize=(8, 3.5))
  axis = figure.subplots()
  positions = np.arange(len(metrics))
  width = 0.8 / max(len(models), 1)
  for offset, key in enumerate(models):
    values = _heights([results["satisfaction"][key][m] for m in metrics])
    axis.bar(positions + offset * width, values, width,
             label=MODEL_NAMES[key], yerr=_error_bars(
                 results["satisfaction"][key], metrics, values), capsize=3)
  axis.set_xticks(positions + width * (len(models) - 1) / 2, metrics)
  settings = results.get("bootstrap") or {}
  title = "User satisfaction"
  if settings.get("resamples"):
    title += f" (bars: {settings['confidence']:.0%} interval over users)"
  axis.set(title=title, ylim=(0, 1))
  axis.legend()
  figure.subplots_adjust(left=0.07, right=0.98, bottom=0.1, top=0.9)
  return _png(figure, tight=False)


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
