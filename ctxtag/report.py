"""A run's outputs: results.json, report.md beside the paper's published
figures, and PNG plots.

`write_outputs` renders all of them in memory first, then writes them
together through temporary files that are renamed only once every one is
complete: a full disk or a kill leaves the previous outputs as they were,
never a new results.json beside an old report.md.
"""

import contextlib
import json
import os

# Figures made directly, not through pyplot: no GUI backend, no global
# figure registry, and PNGs rendered by Agg.
from matplotlib import figure as mpl_figure
from matplotlib import ticker
import numpy as np

from ctxtag import evaluation
from ctxtag import files
from ctxtag import labels
from ctxtag import models
from ctxtag import render
from ctxtag.evaluation import ranking

# The paper's test-set figures (docs/paper.md); ranges are given as their
# middle.
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


def protocol_rows() -> list[tuple[str, str, str]]:
  """(results key, report.md title, plot name) of every protocol, in report
  order, from the model table: each multi-label model's MO-MG and MO-SG,
  every model's own SG protocol, then the thresholds tuned on validation."""
  track = [model for model in models.MODELS.values()
           if model.output == "multi_label"]
  rows = []
  for model in track:
    rows += [
        (model.prefixed("mo_mg"),
         f"MO-MG, {model.display} (vs track's union of contexts)",
         f"{model.display}, multi-label vs track's contexts (MO-MG)"),
        (model.prefixed("mo_sg"),
         f"MO-SG, {model.display} (thresholded, vs user's context)",
         f"{model.display}, thresholded vs user's context (MO-SG)")]
  rows += [(model.sg_protocol, model.sg_title, model.sg_plot)
           for model in models.MODELS.values()]
  for model in track:
    rows += [(model.prefixed(f"{key}_tuned"),
              f"{name}, {model.display}, thresholds tuned on validation",
              f"{model.display}, {name}, thresholds tuned on validation")
             for key, name in (("mo_mg", "MO-MG"), ("mo_sg", "MO-SG"))]
  return rows


def model_name(name: str) -> str:
  """A model's display name (its entry's), or `name` if it has no entry."""
  return models.MODELS[name].display if name in models.MODELS else name


def _named(present) -> list[tuple[str, str]]:
  """(model, display name) of the models in `present`, in MODELS order."""
  return [(name, model.display) for name, model in models.MODELS.items()
          if name in present]


METRIC_NAMES = {"auc": "AUC", "recall": "recall", "precision": "precision",
                "f1": "F1", "accuracy": "accuracy", "recall@10": "recall@10",
                "ndcg@10": "NDCG@10", "ap": "AP",
                "graded_ndcg@10": "graded NDCG@10 (truth)",
                "audio_overlap@10": "top-10 overlap with audio",
                "user_gain_ndcg@10": "NDCG@10 gain from the user",
                "user_gain_graded_ndcg@10": "graded gain from the user"}
# The comparisons that answer the paper's question, in the order asked:
# does the user help beyond the audio, beyond the user alone, and does the
# user alone beat the audio (results' comparisons keys: a_vs_b is a - b).
QUESTION_COMPARISONS = ("audio_user_vs_audio", "audio_user_vs_user",
                        "user_vs_audio")
# What each MO-MG ground truth (config mo_mg_truth) is, in words.
MO_MG_TRUTH_TEXT = {
    "test": "each track's contexts over the evaluated split's pairs"
            " (`mo_mg_truth` \"test\")",
    "all_splits": "each track's contexts over its pairs in every split, as"
                  " the authors' audio_based_model.py reads them from"
                  " multilabel_all.csv (`mo_mg_truth` \"all_splits\")",
}
MO_MG_TRUTH_SHORT = {"test": "each track's contexts over the evaluated pairs",
                     "all_splits": "each track's contexts over every split,"
                                   " as the authors' code"}
# The late fusion's weights in words (results' fusion_weights keys).
FUSION_WEIGHT_NAMES = {"audio": "audio a", "user": "user b",
                       "typical_user": "typical user c"}


def _cell_ci(values: dict, metric: str) -> str:
  """"0.291 [0.280, 0.302]": the value and its interval, where it has one."""
  return render.cell(values.get(metric), values.get(f"{metric}_ci"))


def protocol_table(results: dict) -> list[str]:
  lines = ["| protocol | AUC | recall | precision | F1 | paper AUC | paper"
           " recall | paper precision | paper F1 |",
           "|---|---|---|---|---|---|---|---|---|"]
  for key, title, _ in protocol_rows():
    if key not in results:
      continue
    ours = results[key]["average"]
    paper = PAPER_PROTOCOLS.get(key, {})
    lines.append(f"| {title} | " + " | ".join(
        [_cell_ci(ours, m) for m in evaluation.METRICS]
        + [render.cell(paper.get(m)) for m in evaluation.METRICS]) + " |")
  return lines


def satisfaction_table(results: dict) -> list[str]:
  lines = ["| model | accuracy | recall | precision | F1 | paper accuracy |"
           " paper recall | paper precision | paper F1 |",
           "|---|---|---|---|---|---|---|---|---|"]
  metrics = evaluation.SATISFACTION_METRICS
  for key, title in _named(results["satisfaction"]):
    ours = results["satisfaction"][key]
    paper = PAPER_SATISFACTION.get(key, {})
    lines.append(f"| {title} | " + " | ".join(
        [_cell_ci(ours, m) for m in metrics]
        + [render.cell(paper.get(m)) for m in metrics]) + " |")
  return lines


def ranking_table(results: dict) -> list[str]:
  lines = ["| model | hit@1 | hit@3 | MRR | NDCG@3 |", "|---|---|---|---|---|"]
  for key, title in _named(results.get("ranking", {})):
    lines.append(f"| {title} | " + " | ".join(
        _cell_ci(results["ranking"][key], m) for m in ranking.METRICS) + " |")
  return lines


def retrieval_metrics(results: dict) -> list[str]:
  """The retrieval metrics the results hold, in METRIC_NAMES order."""
  found = {m for values in results.get("retrieval", {}).values()
           for m in values if not m.endswith("_ci")}
  return [m for m in METRIC_NAMES if m in found]


def retrieval_table(results: dict) -> list[str]:
  metrics = retrieval_metrics(results)
  lines = ["| model | " + " | ".join(METRIC_NAMES[m] for m in metrics)
           + " |", "|---|" + "---|" * len(metrics)]
  for key, title in _named(results.get("retrieval", {})):
    lines.append(f"| {title} | " + " | ".join(
        _cell_ci(results["retrieval"][key], m) for m in metrics) + " |")
  return lines


def _interval_words(results: dict) -> str:
  """" [95% interval]": the intervals' coverage as a heading says it; ""
  when the evaluation made none (0 resamples)."""
  settings = results.get("bootstrap") or {}
  if not settings.get("resamples", 1):
    return ""
  return f" [{settings.get('confidence', 0.95):.0%} interval]"


def comparison_table(results: dict) -> list[str]:
  lines = [f"| comparison | metric | difference{_interval_words(results)} |"
           " Wilcoxon p |", "|---|---|---|---|"]
  for key, metrics in results.get("comparisons", {}).items():
    a, _, b = key.partition("_vs_")
    for metric, entry in metrics.items():
      lines.append(
          f"| {model_name(a)} - {model_name(b)} | {metric} | "
          + _cell_ci({"d": entry["difference"], "d_ci": entry["ci"]}, "d")
          + f" | {render.p_value_text(entry['p_value'])} |")
  return lines


def thresholds_table(results: dict) -> list[str]:
  keys = [k for k in ("mo_mg_tuned", "mo_sg_tuned") if k in results]
  lines = ["| context | " + " | ".join(
      f"MO-{k.split('_')[1].upper()} threshold" for k in keys) + " |",
           "|---|" + "---|" * len(keys)]
  for label in labels.LABELS:
    lines.append(f"| {label} | " + " | ".join(
        render.cell(results[k]["thresholds"][label]) for k in keys) + " |")
  return lines


def ceiling_table(ceiling: dict) -> list[str]:
  names = list(ceiling["share"])
  lines = ["| metric | prior | oracle | " + " | ".join(
      f"{model_name(m)} share" for m in names) + " |",
           "|---|---|---|" + "---|" * len(names)]
  for group, metrics in ceiling["baseline"].items():
    for metric, baseline in metrics.items():
      lines.append(
          f"| {group} {metric} | {render.cell(baseline)} |"
          f" {render.cell(ceiling['oracle'][group][metric])} | " + " | ".join(
              render.cell(ceiling["share"][m][group][metric]) for m in names)
          + " |")
  return lines


def statistics_sections(results: dict) -> list[str]:
  """report.md's sections beyond the paper: ranking, comparisons, tuned
  thresholds, share of the ceiling."""
  lines = []
  if results.get("ranking"):
    lines += ["", "## Ranking of the true context (per user, then averaged)",
              ""] + ranking_table(results)
  if results.get("retrieval"):
    lines += ["", "## Retrieval: the evaluated tracks ranked for each user"
              " and context", "",
              "One query per test user and context the user gave; the"
              " relevant tracks are that user's tracks with that context."
              " Per query, then averaged per user and over users; ties at"
              " their expected value over orderings (the user-only model"
              " ranks every track alike: the random ranking). Graded NDCG"
              " scores each ranking of every track against the true"
              " probabilities (simulated data).", ""]
    lines += retrieval_table(results)
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


def per_context_table(protocol: dict, counts: dict | None = None,
                      counted: str = "pairs") -> list[str]:
  """One protocol's per-context table.

  Args:
    protocol: the protocol's results (`per_label`).
    counts: {context: how many of the ground truth's `counted` hold it}; a
      last column then gives them and marks a context none holds.
    counted: what `counts` counts ("pairs", or "tracks" for MO-MG).

  Returns:
    The table's lines.
  """
  header = "| context | AUC | recall | precision | F1 |"
  rule = "|---|---|---|---|---|"
  if counts is not None:
    header, rule = header + f" {counted} |", rule + "---|"
  lines = [header, rule]
  for label in labels.LABELS:
    row = protocol["per_label"][label]
    line = f"| {label} | " + " | ".join(
        render.cell(row[m]) for m in evaluation.METRICS) + " |"
    if counts is not None:
      count = counts[label]
      line += f" {count:,}{' (none: counted 0)' if count == 0 else ''} |"
    lines.append(line)
  return lines


def _protocol_counts(results: dict, key: str) -> tuple[dict | None, str]:
  """The counts of protocol `key`'s per-context table, and what they count:
  MO-MG's tracks, the other protocols' pairs."""
  counts = results.get("context_counts") or {}
  if key in ("mo_mg", "mo_mg_tuned"):
    return counts.get("mo_mg_tracks"), "tracks"
  return counts.get("pairs"), "pairs"


def mo_mg_truth_line(results: dict) -> list[str]:
  """The sentence saying which ground truth MO-MG used (if it ran)."""
  truth = results.get("mo_mg_truth")
  if truth is None:
    return []
  return ["", f"MO-MG's ground truth: {MO_MG_TRUTH_TEXT[truth]}."]


def fusion_lines(results: dict) -> list[str]:
  """report.md's section on the late fusion's fitted weights, if any."""
  weights = results.get("fusion_weights")
  if not weights:
    return []
  return ["", "## Late fusion weights (audio + user)", "",
          "logits = a x audio logits + b x (user logits - typical user's"
          " logits) + c x typical user's logits, fitted on the validation"
          " pairs (docs/study.md):", "",
          "| " + " | ".join(FUSION_WEIGHT_NAMES.values()) + " |",
          "|---|---|---|",
          "| " + " | ".join(f"{weights[k]:.3f}" for k in FUSION_WEIGHT_NAMES)
          + " |"]


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
  lines += mo_mg_truth_line(results)
  lines += ["", "## User satisfaction (per user, then averaged)", ""]
  lines += satisfaction_table(results)
  lines += statistics_sections(results)
  if training:
    lines += ["", "## Training", "",
              "| model | epochs | best epoch | best validation loss |"
              " stopped early |", "|---|---|---|---|---|"]
    for name, summary in training.items():
      lines.append(f"| {model_name(name)} | {summary['epochs']} |"
                   f" {summary['best_epoch']} |"
                   f" {summary['best_validation_loss']:.4f} |"
                   f" {summary['stopped_early']} |")
  lines += fusion_lines(results)
  lines += ["", "## Per context", ""]
  if results.get("context_counts"):
    lines += [
        "The last column counts the evaluated split's pairs (MO-MG: tracks)"
        " that hold each context. A context none holds is marked \"none\":"
        " its AUC is undefined and left out of the mean AUC; its recall,"
        " precision and F1 are 0 and count as 0 in the means over contexts,"
        " as in the authors' code (scikit-learn's zero_division=0).", ""]
  for key, title_text, _ in protocol_rows():
    if key in results:
      lines += [f"### {title_text}", ""] + per_context_table(
          results[key], *_protocol_counts(results, key))
      lines.append("")
  return "\n".join(lines) + "\n"


def _heights(values) -> np.ndarray:
  """Bar heights; an undefined metric (None, NaN) draws no bar."""
  return np.array([np.nan if v is None else v for v in values], np.float64)


def plot_training_curves(training: dict[str, dict]) -> bytes:
  """training_curves.png (`training_curves_figure`)."""
  return render.figure_png(training_curves_figure(training), tight=False)


def training_curves_figure(training: dict[str, dict]):
  """Each model's training and validation loss per epoch, its best epoch
  and where it stopped marked, on integer epoch ticks.

  Args:
    training: per-model training summaries (ctxtag.train).

  Returns:
    The matplotlib Figure, a panel per model.
  """
  figure = mpl_figure.Figure(figsize=(5 * max(len(training), 1), 3.8))
  axes = figure.subplots(1, max(len(training), 1))
  for axis, (name, summary) in zip(np.atleast_1d(axes), training.items()):
    history = summary["history"]
    epochs = [h["epoch"] for h in history]
    axis.plot(epochs, [h["train_loss"] for h in history], marker=".",
              label="training (mean over the epoch)")
    validation = [h["validation_loss"] for h in history]
    axis.plot(epochs, validation, marker=".", label="validation")
    best = summary["best_epoch"]
    if best in epochs:
      axis.plot([best], [validation[epochs.index(best)]], marker="*",
                markersize=12, color="tab:green", linestyle="none",
                label=f"best: epoch {best}")
    last = summary["epochs"]
    if summary["stopped_early"]:
      why = (f"stopped after epoch {last}: no better\nvalidation loss for"
             f" {last - best} epochs")
    else:
      why = f"ran all {last} epochs (max_epochs)"
    axis.axvline(last, color="grey", linestyle=":", label=why)
    axis.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    axis.set(title=model_name(name), xlabel="epoch",
             ylabel="loss (class-weighted)")
    axis.legend(fontsize=8)
  figure.tight_layout()
  return figure


def plot_per_context(results: dict) -> bytes:
  """per_context.png (`per_context_figure`)."""
  return render.figure_png(per_context_figure(results), tight=False)


def per_context_figure(results: dict):
  """One heat map: protocols (rows) by contexts (columns), a block of
  columns per metric.

  A heat map rather than bars: 8 protocols x 10 contexts x 4 metrics are 320
  bars, slow to draw (over a second at paper scale) and hard to compare; one
  axes also draws faster than four. Undefined metrics are blank; the numbers
  are in report.md.
  """
  plot_names_ = {key: name for key, _, name in protocol_rows()}
  keys = [key for key in plot_names_ if key in results]
  block = labels.NUM_LABELS + 1  # a blank column between metrics
  grid = np.full((len(keys), block * len(evaluation.METRICS) - 1), np.nan)
  for m, metric in enumerate(evaluation.METRICS):
    grid[:, m * block:m * block + labels.NUM_LABELS] = [
        _heights([results[key]["per_label"][label][metric]
                  for label in labels.LABELS]) for key in keys]
  height = 0.3 * len(keys) + 1.5
  figure = mpl_figure.Figure(figsize=(14, height))
  # Fixed margins (room for the protocols' names): tight_layout measures
  # every label and doubles the time.
  box = [0.25, 0.95 / height, 0.68, 1 - 1.3 / height]
  axis = figure.add_axes(box)
  image = axis.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto",
                      interpolation="nearest")
  axis.set_xticks([m * block + c for m in range(len(evaluation.METRICS))
                   for c in range(labels.NUM_LABELS)],
                  list(labels.LABELS) * len(evaluation.METRICS), rotation=90,
                  fontsize=8)
  axis.set_yticks(np.arange(len(keys)), [plot_names_[k] for k in keys],
                  fontsize=8)
  for m, metric in enumerate(evaluation.METRICS):
    axis.text(m * block + (labels.NUM_LABELS - 1) / 2, -0.7,
              METRIC_NAMES[metric], ha="center", va="bottom")
  figure.colorbar(image, cax=figure.add_axes([0.94, box[1], 0.01, box[3]]))
  return figure


def _error_bars(values: dict, metrics, heights) -> np.ndarray | None:
  """(2, metrics) distances from each bar to its interval's ends."""
  if not all(values.get(f"{m}_ci") for m in metrics):
    return None
  return render.error_bars(heights, [values[f"{m}_ci"] for m in metrics])


def plot_satisfaction(results: dict) -> bytes:
  return _model_bars(results, "satisfaction",
                     evaluation.SATISFACTION_METRICS, "User satisfaction")


def plot_retrieval(results: dict) -> bytes:
  """retrieval.png: a panel per metric (their scales differ: recall@10 of
  one relevant track in a thousand is small beside graded NDCG), a bar per
  model with its interval."""
  metrics = retrieval_metrics(results)
  named = _named(results["retrieval"])
  figure = mpl_figure.Figure(figsize=(3.2 * len(metrics), 3.6))
  for axis, metric in zip(np.atleast_1d(figure.subplots(1, len(metrics))),
                          metrics):
    for position, (key, name) in enumerate(named):
      values = results["retrieval"][key]
      if metric not in values:  # the audio model's overlap with itself
        continue
      height = _heights([values[metric]])
      axis.bar([position], height, 0.7, color=f"C{position}", label=name,
               yerr=_error_bars(values, [metric], height), capsize=3)
    axis.set_xticks([])
    axis.set_title(METRIC_NAMES[metric])
    axis.axhline(0, color="black", linewidth=0.6)
  handles, names = figure.axes[0].get_legend_handles_labels()
  figure.legend(handles, names, loc="lower center", ncols=len(names),
                fontsize=8, frameon=False)
  figure.suptitle("Retrieval: evaluated tracks ranked per user and context")
  figure.subplots_adjust(left=0.05, right=0.98, bottom=0.15, top=0.82,
                         wspace=0.35)
  return render.figure_png(figure, tight=False)


def _model_bars(results: dict, kind: str, metrics, title: str) -> bytes:
  """Bars of every model's `kind` metrics, with their intervals."""
  named = _named(results[kind])
  figure = mpl_figure.Figure(figsize=(max(8, 2 * len(metrics)), 3.5))
  axis = figure.subplots()
  positions = np.arange(len(metrics))
  width = 0.8 / max(len(named), 1)
  for offset, (key, name) in enumerate(named):
    values = _heights([results[kind][key].get(m) for m in metrics])
    axis.bar(positions + offset * width, values, width,
             label=name, yerr=_error_bars(
                 results[kind][key], metrics, values), capsize=3)
  axis.set_xticks(positions + width * (len(named) - 1) / 2,
                  [METRIC_NAMES[m] for m in metrics])
  settings = results.get("bootstrap") or {}
  if settings.get("resamples"):
    title += f" (bars: {settings['confidence']:.0%} interval over users)"
  axis.set(title=title, ylim=(0, 1))
  axis.legend()
  figure.subplots_adjust(left=0.07, right=0.98, bottom=0.1, top=0.9)
  return render.figure_png(figure, tight=False)


# The paper's rows in plot_paper_comparison: protocol key, short name.
PAPER_PROTOCOL_GROUPS = (("mo_mg", "MO-MG\naudio"), ("mo_sg", "MO-SG\naudio"),
                         ("so_sg", "SO-SG\naudio"),
                         ("user_sg", "SG\naudio + user"))


def _paired_bars(axis, groups: list[str], ours: list[dict], paper: list[dict],
                 metric: str) -> None:
  """This run's bars (with intervals where it has them) beside the paper's,
  each labelled with its value."""
  positions = np.arange(len(groups))
  heights = _heights([values.get(metric) for values in ours])
  bars = axis.bar(positions - 0.21, heights, 0.4, color="tab:blue",
                  label="this run")
  ends = np.array([_heights(values.get(f"{metric}_ci") or (None, None))
                   for values in ours]).reshape(len(ours), 2)
  # Only bars with an interval get an error bar (MO-MG has none).
  has = ~np.isnan(ends).any(axis=1) & ~np.isnan(heights)
  if has.any():
    axis.errorbar(positions[has] - 0.21, heights[has],
                  yerr=np.abs(ends[has].T - heights[has]), fmt="none",
                  ecolor="black", capsize=2, linewidth=1)
  # Upright labels would overlap their neighbours' at this width.
  axis.bar_label(bars, [render.cell(h) for h in heights], fontsize=7,
                 padding=3, rotation=90)
  paper_heights = _heights([values.get(metric) for values in paper])
  bars = axis.bar(positions + 0.21, paper_heights, 0.4, color="tab:grey",
                  label="paper (Ibrahim et al., ISMIR 2020)")
  axis.bar_label(bars, [render.cell(h) for h in paper_heights], fontsize=7,
                 padding=3, rotation=90)
  axis.set_xticks(positions, groups, fontsize=8)
  axis.set(ylim=(0, 1.2), title=METRIC_NAMES[metric])


def plot_paper_comparison(results: dict) -> bytes:
  """paper_comparison.png (`paper_comparison_figure`)."""
  return render.figure_png(paper_comparison_figure(results), tight=False)


def paper_comparison_figure(results: dict):
  """This run's figures beside the paper's published ones: the protocols'
  means over contexts (top) and user satisfaction (bottom), a panel per
  metric, for the protocols and models the run has (`plot_names` draws it
  only for a run with at least one).

  Args:
    results: the results dict.

  Returns:
    The matplotlib Figure.
  """
  protocols = [(k, name) for k, name in PAPER_PROTOCOL_GROUPS if k in results]
  models = [k for k in PAPER_SATISFACTION if k in results["satisfaction"]]
  figure = mpl_figure.Figure(figsize=(14, 7))
  axes = figure.subplots(2, 4)
  for axis, metric in zip(axes[0], evaluation.METRICS):
    _paired_bars(axis, [name for _, name in protocols],
                 [results[k]["average"] for k, _ in protocols],
                 [PAPER_PROTOCOLS[k] for k, _ in protocols], metric)
  for axis, metric in zip(axes[1], evaluation.SATISFACTION_METRICS):
    _paired_bars(axis, [model_name(k) for k in models],
                 [results["satisfaction"][k] for k in models],
                 [PAPER_SATISFACTION[k] for k in models], metric)
  axes[0][0].set_ylabel("protocols:\nmean over contexts")
  axes[1][0].set_ylabel("user satisfaction:\nper user, then averaged")
  handles, names = axes[0][0].get_legend_handles_labels()
  settings = results.get("bootstrap") or {}
  title = "This run beside the paper's published figures"
  if settings.get("resamples"):
    title += (f" (error bars: {settings['confidence']:.0%} interval over"
              " users; MO-MG has none)")
  figure.suptitle(title, y=0.985)
  figure.legend(handles, names, loc="upper center", ncols=2, fontsize=9,
                bbox_to_anchor=(0.5, 0.95), frameon=False)
  figure.subplots_adjust(left=0.07, right=0.98, bottom=0.08, top=0.86,
                         hspace=0.45, wspace=0.25)
  return figure


def plot_names(results: dict, with_training: bool) -> list[str]:
  """The PNG files `plots` makes, in order."""
  names = ["training_curves.png"] if with_training else []
  names += ["per_context.png", "satisfaction.png"]
  if results.get("retrieval"):
    names.append("retrieval.png")
  if any(k in results for k, _ in PAPER_PROTOCOL_GROUPS) or any(
      k in results["satisfaction"] for k in PAPER_SATISFACTION):
    names.append("paper_comparison.png")
  return names


def plots(results: dict, training: dict[str, dict]) -> dict[str, bytes]:
  """The PNG plots by file name (`plot_names`); training curves only if
  `training`."""
  draw = {"training_curves.png": lambda: plot_training_curves(training),
          "per_context.png": lambda: plot_per_context(results),
          "satisfaction.png": lambda: plot_satisfaction(results),
          "retrieval.png": lambda: plot_retrieval(results),
          "paper_comparison.png": lambda: plot_paper_comparison(results)}
  return {name: draw[name]() for name in plot_names(results, bool(training))}


def results_text(results: dict) -> str:
  """results.json's text: strict JSON, undefined metrics as null."""
  return json.dumps(files.strict_json(results), indent=2,
                    allow_nan=False) + "\n"


def _write_temporary(path: str, content: str | bytes) -> str:
  """Writes `content` to a synced temporary file beside `path`."""
  handle, temporary = files.temporary_beside(path)
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


def output_paths(output_dir: str, results: dict,
                 with_training: bool) -> list[str]:
  """The files `write_outputs` writes into `output_dir`, in order."""
  return [os.path.join(output_dir, "results.json"),
          os.path.join(output_dir, "report.md")] + [
              os.path.join(output_dir, "plots", name)
              for name in plot_names(results, with_training)]


def write_outputs(output_dir: str, results: dict, title: str,
                  details: list[str], training: dict[str, dict]) -> list[str]:
  """Writes results.json, report.md and plots/*.png into `output_dir`.

  Everything is rendered before the first byte is written, and written with
  `write_together`, so a failure keeps the previous outputs whole.

  Returns:
    The paths written (`output_paths`).
  """
  paths = output_paths(output_dir, results, bool(training))
  pngs = plots(results, training)
  contents = dict(zip(paths, [results_text(results), report_text(
      results, title, details, training)] + list(pngs.values())))
  write_together(contents)
  return paths


def _signed_interval(entry: dict) -> str:
  """"+0.058 [0.045, 0.071]": a difference and its interval."""
  low, high = entry.get("ci") or (None, None)
  text = f"{entry['difference']:+.3f}"
  if low is not None and high is not None and not (
      np.isnan(low) or np.isnan(high)):
    text += f" [{low:.3f}, {high:.3f}]"
  return text


def summary_text(results: dict, heading: str, paths: list[str]) -> str:
  """The end of a run on the terminal, in at most 25 lines: satisfaction F1
  per model, the paired differences that answer the paper's question, MO-MG,
  the fusion's weights and the files written (report.md holds the rest).

  Args:
    results: the results dict.
    heading: the first line (what was evaluated).
    paths: the files written (`output_paths`).

  Returns:
    The text, ending in a newline.
  """
  interval = _interval_words(results)
  satisfaction = results["satisfaction"]
  users = [v["users"] for v in satisfaction.values() if "users" in v]
  if users:
    heading += f" ({users[0]:,} users)"
  width = max((len(name) for _, name in _named(satisfaction)), default=0) + 2
  title = "user satisfaction F1" + (interval[:-1] + " over users]"
                                     if interval else "")
  lines = [heading, f"{title:<{width + 26}}paper"]
  for key, name in _named(satisfaction):
    cell = _cell_ci(satisfaction[key], "f1")
    paper = render.cell(PAPER_SATISFACTION.get(key, {}).get("f1"))
    lines.append(f"  {name:<{width}}{cell:<24}{paper}".rstrip())
  comparisons = [k for k in QUESTION_COMPARISONS
                 if k in results.get("comparisons", {})]
  if comparisons:
    lines.append(f"does the user help? F1 difference{interval}, Wilcoxon"
                 " p, paired over users:")
    for key in comparisons:
      a, _, b = key.partition("_vs_")
      entry = results["comparisons"][key]["f1"]
      compared = f"{model_name(a)} vs {model_name(b)}"
      lines.append(f"  {compared:<27}{_signed_interval(entry):<24}"
                   f"p {render.p_value_text(entry['p_value'])}")
  if "mo_mg" in results:
    truth = results.get("mo_mg_truth", "test")
    ours = render.cell(results["mo_mg"]["average"]["f1"])
    paper = render.cell(PAPER_PROTOCOLS["mo_mg"]["f1"])
    lines.append(f"MO-MG F1 {ours} (paper {paper}), ground truth: {truth}"
                 f" ({MO_MG_TRUTH_SHORT[truth]})")
  weights = results.get("fusion_weights")
  if weights:
    lines.append("late fusion weights: " + ", ".join(
        f"{FUSION_WEIGHT_NAMES[k]} = {weights[k]:.3f}"
        for k in FUSION_WEIGHT_NAMES))
  report = [p for p in paths if p.endswith("report.md")]
  others = [p for p in paths if not p.endswith("report.md")]
  if report:
    lines.append(f"full report: {report[0]}")
  lines.append("wrote: " + (others[0] if others else ""))
  lines += [f"       {p}" for p in others[1:]]
  return "\n".join(lines) + "\n"

