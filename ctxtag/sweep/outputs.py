"""A sweep's outputs from its dict: sweep.md (tables per run and per seed
group), sweep.png (satisfaction F1 and the comparisons' differences with
their intervals), and writing them with sweep.json, all or none.

Cells, p-values, error bars and PNGs are ctxtag.render's, as in a run's
report.
"""

import json
import os

# Figures made directly, not through pyplot: no GUI backend, no global
# figure registry.
from matplotlib import figure as mpl_figure

from ctxtag import files
from ctxtag import render
from ctxtag import report
from ctxtag.sweep import axes as axes_lib
from ctxtag.sweep import groups as groups_lib
from ctxtag.sweep import model_lookups
from ctxtag.sweep import results as results_lib

OUTPUTS = ("sweep.json", "sweep.md", "sweep.png")
# Neighbouring series are shifted by this share of the x range, so that
# their error bars do not hide each other.
_DODGE = 0.012
# The sweeps' plots predate the reports' resolution; kept so that they do
# not change.
_DPI = 80


def _axes(sweep: dict) -> list[axes_lib.Axis]:
  """The sweep's axes from its dict."""
  return [axes_lib.Axis(a["key"], tuple(a["values"]), a["label"])
          for a in sweep["axes"]]


def _is_influence_sweep(sweep: dict) -> bool:
  return [a["key"] for a in sweep["axes"]] == [axes_lib.INFLUENCE_KEY]


def _present(models: list[dict], comparisons: list[dict]
             ) -> tuple[list[str], list[str]]:
  """(models, comparison keys) that any of the runs' or groups' {model:
  ...} and {comparison key: ...} dicts has, in the sweep's order."""
  return ([m for m in model_lookups.model_order()
           if any(m in entry for entry in models)],
          [f"{a}_vs_{b}" for a, b in model_lookups.comparisons()
           if any(f"{a}_vs_{b}" in entry for entry in comparisons)])


def _comparison_cell(entry: dict | None) -> str:
  """"-0.009 [-0.020, 0.003] (p 6.3e-04)"; "" where the run has none."""
  if entry is None:
    return ""
  p_text = render.p_value_text(entry["p_value"], prefix="p ")
  return " ".join(filter(None, [render.cell(entry["difference"], entry["ci"]),
                                f"({p_text})" if p_text else ""]))


def _table(sweep: dict, kind: str, metric: str) -> list[str]:
  """One row per run: its values, each model's value, the comparisons."""
  runs, axes = sweep["runs"], _axes(sweep)
  models, keys = _present([r[kind] for r in runs],
                          [r["comparisons"] for r in runs])
  lines = ["| " + " | ".join(
      [axis.header for axis in axes]
      + [model_lookups.display_name(m) for m in models]
      + [model_lookups.comparison_name(k) for k in keys]) + " |",
           "|---|" + "---|" * (len(axes) - 1 + len(models) + len(keys))]
  for run in runs:
    cells = [axes_lib.value_text(run["settings"][axis.key]) for axis in axes]
    cells += [render.cell(run[kind][m][metric], run[kind][m][f"{metric}_ci"])
              if m in run[kind] else "" for m in models]
    cells += [_comparison_cell(run["comparisons"].get(key, {}).get(metric))
              for key in keys]
    lines.append("| " + " | ".join(cells) + " |")
  return lines


def _values_text(point_values: dict) -> str:
  return ", ".join(f"{axes_lib.header(k)} {axes_lib.value_text(v)}"
                   for k, v in point_values.items())


def _group_table(group: dict) -> list[str]:
  """A group's models and comparisons over its seeds."""
  seeds = ", ".join(axes_lib.value_text(s) for s in group["seeds"])
  users = ("one draw of the test users shared by the seeds"
           if group["test_users"] == "shared" else
           "the test users drawn within each seed (each has its own)")
  lines = [f"### {_values_text(group['settings']) or 'All runs'}", "",
           f"Seeds {seeds}; intervals resample the seeds and {users}.", "",
           "| model | satisfaction F1 | MRR |", "|---|---|---|"]
  for model, values in group["models"].items():
    lines.append(f"| {model_lookups.display_name(model)} | " + " | ".join(
        render.cell(values[name]["mean"], values[name]["ci"])
        for name in groups_lib.GROUP_METRICS) + " |")
  if group["comparisons"]:
    lines += ["", "| comparison | satisfaction F1 difference | seeds won |"
              " MRR difference | seeds won |", "|---|---|---|---|---|"]
    for key, values in group["comparisons"].items():
      cells = []
      for name in groups_lib.GROUP_METRICS:
        entry = values[name]
        cells += [render.cell(entry["difference"], entry["ci"]),
                  f"{entry['seeds_won']} / {entry['seeds']}"]
      lines.append(f"| {model_lookups.comparison_name(key)} | "
                   + " | ".join(cells) + " |")
  return lines


def _description(sweep: dict) -> str:
  split = sweep["split_strategy"] or "the world's own track draws"
  options = sweep["dataset_options"] or "none"
  confidence = sweep["confidence"]
  level = f"{confidence:.0%}" if confidence else "95%"
  return (f"Dataset `{sweep['dataset']}`, other options: {options}; split:"
          f" {split}. Brackets: {level} bootstrap interval over each run's"
          " test users; p: Wilcoxon signed-rank test of the per-user"
          " differences.")


def table_text(sweep: dict) -> str:
  """sweep.md.

  Args:
    sweep: sweep.json's dict (ctxtag.sweep).

  Returns:
    The markdown: satisfaction F1 and ranking MRR per run and model, and
    the groups over training seeds.
  """
  if _is_influence_sweep(sweep):
    title = "# The user-influence study"
    where = "`<workdir>/influence_<x>/`"
  else:
    title = "# Sweep over " + ", ".join(a.header for a in _axes(sweep))
    where = ("`<workdir>/" + "/".join(f"{a.label}_<value>"
                                      for a in _axes(sweep)) + "/`")
  lines = [title, "", _description(sweep), "",
           "## User satisfaction F1", ""]
  lines += _table(sweep, "satisfaction", results_lib.SATISFACTION_METRIC)
  lines += ["", "## Ranking MRR of the true context", ""]
  lines += _table(sweep, "ranking", results_lib.RANKING_METRIC)
  if sweep.get("groups"):
    lines += ["", "## Over training seeds", "",
              "Means over the seeds of each run's mean over users; brackets:"
              " two-level bootstrap interval (seeds and users); seeds won:"
              " the seeds whose difference is above 0."]
    for group in sweep["groups"]:
      lines += [""] + _group_table(group)
  lines += ["", f"Each run: {where} (report.md, results.json)."]
  return "\n".join(lines) + "\n"


def _plot_lines(axis, xs_all, series: dict, dots: dict | None = None,
                numeric: bool = True) -> None:
  """One line with error bars per series: {key: (label, values, cis)};
  `dots` {key: [per-x lists]} adds each point's seeds as dots beside it.
  Categorical x (`numeric` False) gets markers alone, further apart."""
  span = (max(xs_all) - min(xs_all)) or 1.0
  dodge = _DODGE if numeric else 6 * _DODGE
  for number, (key, (label, values, cis)) in enumerate(series.items()):
    shift = (number - (len(series) - 1) / 2) * dodge * span
    defined = [v is not None for v in values]
    xs = [x + shift for x, d in zip(xs_all, defined) if d]
    ys = [v for v, d in zip(values, defined) if d]
    style, colour = model_lookups.style(key)
    if not numeric:
      style = style.rstrip("-") or "_"
    drawn = axis.errorbar(xs, ys, yerr=render.error_bars(
        ys, [c for c, d in zip(cis, defined) if d], clip=True), fmt=style,
                          color=colour, capsize=3, label=label)
    if dots is not None:
      for x, seeds in zip(xs_all, dots[key]):
        axis.scatter([x + shift + dodge * span / 3] * len(seeds), seeds,
                     s=12, alpha=0.6, color=drawn.lines[0].get_color(),
                     linewidths=0, zorder=3)


def _x_positions(values_list: list[dict], keys: list[str]):
  """(x values, tick labels, x label, numeric): numbers where one numeric
  key varies, else positions labelled by the values."""
  if len(keys) == 1:
    values = [v[keys[0]] for v in values_list]
    if all(isinstance(v, (int, float)) and not isinstance(v, bool)
           for v in values):
      return (values, [axes_lib.value_text(v) for v in values],
              axes_lib.header(keys[0]), True)
  labels = [", ".join(axes_lib.value_text(v[k]) for k in keys) or "all seeds"
            for v in values_list]
  return (list(range(len(values_list))), labels,
          ", ".join(axes_lib.header(k) for k in keys), False)


def _finish(figure, axes_pair, xs, ticks, xlabel, left_title,
            ylabel) -> bytes:
  """Titles, ticks and legends of both panels; the figure as PNG."""
  left, right = axes_pair
  right.axhline(0, color="grey", linewidth=0.8)
  left.set(title=left_title, xlabel=xlabel, ylabel=ylabel)
  right.set(title="Difference in satisfaction F1", xlabel=xlabel,
            ylabel="F1 difference")
  for axis in (left, right):
    axis.set_xticks(xs, ticks)
    if axis.get_legend_handles_labels()[0]:  # a run of one model has none
      axis.legend(fontsize=8)
    axis.grid(alpha=0.3)
  return render.figure_png(figure, dpi=_DPI)


def _plot_group_panel(axis, xs, by_group: list[dict], keys: list[str],
                      label, point: str, numeric: bool) -> None:
  """One panel of `_plot_groups`: per key (a model or a comparison), its
  satisfaction F1 `point` ("mean" or "difference") with the two-level
  interval in each group, and the seeds as dots."""
  values = {k: [entries.get(k, {}).get("satisfaction_f1")
                for entries in by_group] for k in keys}
  _plot_lines(axis, xs, {
      k: (label(k), [v and v[point] for v in values[k]],
          [v and v["ci"] for v in values[k]]) for k in keys},
              {k: [v["per_seed"] if v else [] for v in values[k]]
               for k in keys}, numeric)


def _split_text(sweep: dict) -> str:
  return (f", {sweep['split_strategy']} split" if sweep["split_strategy"]
          else "")


def _plot_groups(sweep: dict) -> bytes:
  """The groups: each model's mean over seeds and each comparison's, with
  two-level intervals as error bars and the seeds as dots."""
  groups = sweep["groups"]
  keys = [a["key"] for a in sweep["axes"] if a["key"] != axes_lib.SEED_KEY]
  xs, ticks, xlabel, numeric = _x_positions(
      [g["settings"] for g in groups], keys)
  figure = mpl_figure.Figure(figsize=(10, 3.8))
  left, right = figure.subplots(1, 2)
  models, comparisons = _present([g["models"] for g in groups],
                                 [g["comparisons"] for g in groups])
  _plot_group_panel(left, xs, [g["models"] for g in groups], models,
                    model_lookups.display_name, "mean", numeric)
  _plot_group_panel(right, xs, [g["comparisons"] for g in groups],
                    comparisons, model_lookups.comparison_name, "difference",
                    numeric)
  return _finish(figure, (left, right), xs, ticks, xlabel,
                 f"User satisfaction F1 over seeds{_split_text(sweep)}",
                 "F1 (bars: seeds and users; dots: seeds)")


def plot(sweep: dict) -> bytes:
  """sweep.png.

  Args:
    sweep: sweep.json's dict (ctxtag.sweep).

  Returns:
    The PNG: satisfaction F1 of every model, and the comparisons'
    differences, with their intervals as error bars: against the runs'
    values (the influence), or over seeds for each group when `seed` is an
    axis (the seeds as dots).
  """
  if sweep.get("groups"):
    return _plot_groups(sweep)
  runs = sweep["runs"]
  xs, ticks, xlabel, numeric = _x_positions(
      [r["settings"] for r in runs], [a["key"] for a in sweep["axes"]])
  figure = mpl_figure.Figure(figsize=(10, 3.8))
  left, right = figure.subplots(1, 2)
  models, keys = _present([r["satisfaction"] for r in runs],
                          [r["comparisons"] for r in runs])
  _plot_lines(left, xs, {
      m: (model_lookups.display_name(m),
          [r["satisfaction"].get(m, {}).get("f1") for r in runs],
          [r["satisfaction"].get(m, {}).get("f1_ci") for r in runs])
      for m in models}, numeric=numeric)
  _plot_lines(right, xs, {
      k: (model_lookups.comparison_name(k),
          [r["comparisons"].get(k, {}).get("f1", {}).get("difference")
           for r in runs],
          [r["comparisons"].get(k, {}).get("f1", {}).get("ci")
           for r in runs]) for k in keys}, numeric=numeric)
  return _finish(figure, (left, right), xs, ticks, xlabel,
                 f"User satisfaction F1{_split_text(sweep)}",
                 "F1 (bars: interval over users)")


def write_outputs(workdir: str, sweep: dict) -> list[str]:
  """Writes sweep.json, sweep.md and sweep.png together (or none).

  Args:
    workdir: the sweep's directory.
    sweep: sweep.json's dict.

  Returns:
    The paths written.

  Raises:
    files.WriteError: naming the file that could not be written.
  """
  contents = {
      os.path.join(workdir, "sweep.json"): json.dumps(
          files.strict_json(sweep), indent=2, allow_nan=False) + "\n",
      os.path.join(workdir, "sweep.md"): table_text(sweep),
      os.path.join(workdir, "sweep.png"): plot(sweep)}
  report.write_together(contents)
  return list(contents)
