"""The user-influence study: the paper's study across simulated worlds.

The simulated world draws each pair's context from a mix of the track's
audio and the user's taste, weighted by `user_influence` (0: the audio
alone decides, 1: the user alone). Running the whole study at several
weights shows when modelling the user pays: the audio + user model's gain
over the audio model should be nil at 0 and grow with the weight. With a
`cold_user` or `cold_track` split the same study shows what a new user or
a new track gets.

`run` runs one reproduction per influence into `<workdir>/influence_<x>/`
(through a `reproduce(config, workdir)` function it is given, so that the
library does not import the launchers and tests can stub it), then writes
`sweep.json`, `sweep.md` and `sweep.png` into the workdir. Everything else
here is a pure function of the runs' results dicts.

sweep.json:
  {"dataset", "dataset_options" (the options shared by every run),
   "split_strategy", "confidence",
   "runs": [{"user_influence", "workdir", "users",
             "satisfaction": {model: {"f1", "f1_ci"}},
             "ranking": {model: {"mrr", "mrr_ci"}},
             "comparisons": {"<a>_vs_<b>": {"f1" | "mrr":
                             {"difference", "ci", "p_value"}}}}]}
sorted by influence; models and comparisons as in results.json
(ctxtag.study), those the runs have.
"""

import functools
import io
import json
import math
import os
import time

from matplotlib import figure as mpl_figure
import ml_collections

from ctxtag import distributed
from ctxtag import errors
from ctxtag import files
from ctxtag import report
from ctxtag import run_config
from ctxtag import study

SETTING = "user_influence"  # the simulated world's field (SimulationConfig)
SIMULATED = "contextual_tags/simulated"  # the configs that have the setting
DEFAULT_INFLUENCES = (0.0, 0.25, 0.5, 0.75, 1.0)
# What the sweep keeps of each run: a satisfaction and a ranking metric,
# and the comparisons that say whether the user and the audio each help.
SATISFACTION_METRIC = "f1"
RANKING_METRIC = "mrr"
OUTPUTS = ("sweep.json", "sweep.md", "sweep.png")
# Plot styles (format, colour): a model's colour is kept by its gains over
# the others; the oracle is the ceiling, not a model.
_STYLES = {"audio": ("o-", "C0"), "audio_user": ("s-", "C1"),
           "user": ("^-", "C2"), "oracle": ("--", "k"),
           "audio_user_vs_audio": ("s-", "C1"), "user_vs_audio": ("^-", "C2"),
           "audio_user_vs_user": ("D-", "C3")}
# Neighbouring series are shifted by this share of the x range, so that
# their error bars do not hide each other.
_DODGE = 0.012


def parse_influences(text: str) -> tuple[float, ...]:
  """"0,0.25,1" -> (0.0, 0.25, 1.0), in the order given.

  Raises:
    errors.ConfigError: for an empty list, a value that is not a number or
      lies outside [0, 1], or a value given twice.
  """
  if not text.strip():
    raise errors.ConfigError(f"no {SETTING} values given; expected numbers"
                             " in [0, 1] separated by commas")
  values = []
  for item in (part.strip() for part in text.split(",")):
    try:
      value = float(item)
    except ValueError:
      raise errors.ConfigError(
          f"{item!r} is not a number; expected {SETTING} values in [0, 1]"
          " separated by commas, e.g. 0,0.25,0.5") from None
    if not 0.0 <= value <= 1.0:  # also refuses NaN
      raise errors.ConfigError(f"{SETTING} {item} is outside [0, 1]")
    if value in values:
      raise errors.ConfigError(f"{SETTING} {number_text(value)} is given"
                               " twice")
    values.append(value)
  return tuple(values)


def number_text(value: float) -> str:
  """The shortest text that reads back as `value`: 0, 0.25, 1."""
  text = repr(float(value))
  if "." in text and "e" not in text:
    text = text.rstrip("0").rstrip(".")
  return text


def run_name(influence: float) -> str:
  """The run's directory inside the sweep's workdir."""
  return f"influence_{number_text(influence)}"


def config_at(config: ml_collections.ConfigDict, influence: float,
              split_strategy: str | None = None
              ) -> ml_collections.ConfigDict:
  """`config` with the world's `user_influence` set (and the split).

  Args:
    config: the sweep's run config; its dataset options are kept.
    influence: the world's user_influence.
    split_strategy: replaces config.split_strategy unless None.

  Raises:
    errors.ConfigError: if the dataset is not the simulated world, or its
      options already set user_influence.
  """
  if not config.dataset.startswith(SIMULATED):
    raise errors.ConfigError(
        f"config dataset={config.dataset!r}: the user-influence study needs"
        f" the simulated world ({SIMULATED} or one of its variants), whose"
        f" {SETTING} it sets")
  options = [item.strip() for item in config.dataset_options.split(",")
             if item.strip()]
  if any(item.partition("=")[0].strip() == SETTING for item in options):
    raise errors.ConfigError(
        f"config dataset_options={config.dataset_options!r} sets {SETTING},"
        " which the sweep sets for each run from --influences; remove it")
  changed = config.copy_and_resolve_references()
  changed.dataset_options = ",".join(
      options + [f"{SETTING}={number_text(influence)}"])
  if split_strategy is not None:
    changed.split_strategy = split_strategy
  return changed


def finished(run_dir: str, config: ml_collections.ConfigDict) -> bool:
  """Whether the run in `run_dir` is complete and made with `config`.

  A run writes results.json last, so its presence means done.

  Raises:
    errors.ConfigError: if the finished run was made with another config
      (reusing it would mix two studies in one sweep).
  """
  results = os.path.join(run_dir, "results.json")
  saved = os.path.join(run_dir, "config.json")
  if not (os.path.exists(results) and os.path.exists(saved)):
    return False
  wanted = json.loads(config.to_json_best_effort(indent=2, sort_keys=True))
  if run_config.load(saved) != wanted:
    raise errors.ConfigError(
        f"{saved}: this finished run was made with another config than the"
        " sweep's (another --config, --split_strategy or setting); use a new"
        " --workdir or the same settings")
  return True


def load_results(run_dir: str) -> dict:
  """A run's results.json, checked for what the sweep reads.

  Raises:
    errors.UserError: naming the file and the first missing key.
  """
  path = os.path.join(run_dir, "results.json")
  with open(path) as f:
    try:
      results = json.load(f)
    except json.JSONDecodeError as error:
      raise errors.UserError(f"{path}, line {error.lineno}: not valid JSON"
                             f" ({error.msg}); delete it to rerun the"
                             " evaluation") from None
  if not results.get("satisfaction"):
    raise errors.UserError(f"{path}: no satisfaction results")
  for kind, metric in (("satisfaction", SATISFACTION_METRIC),
                       ("ranking", RANKING_METRIC)):
    for model, values in results.get(kind, {}).items():
      if f"{metric}_ci" not in values:
        raise errors.UserError(
            f"{path}: no {kind}.{model}.{metric}_ci (made before intervals"
            f" existed); re-evaluate with `python -m launch.evaluate"
            f" --workdir={run_dir}`")
  return results


def _model_values(results: dict, kind: str, metric: str) -> dict:
  """{model: {metric, metric_ci}} in study.MODELS order."""
  return {model: {metric: results[kind][model][metric],
                  f"{metric}_ci": results[kind][model][f"{metric}_ci"]}
          for model in study.MODELS if model in results.get(kind, {})}


def summarize_run(influence: float, results: dict) -> dict:
  """One entry of sweep.json's runs from a run's results dict."""
  comparisons = {}
  for a, b in study.COMPARISONS:
    entry = results.get("comparisons", {}).get(f"{a}_vs_{b}")
    if entry is not None:
      comparisons[f"{a}_vs_{b}"] = {
          metric: {key: entry[metric][key]
                   for key in ("difference", "ci", "p_value")}
          for metric in (SATISFACTION_METRIC, RANKING_METRIC)}
  satisfaction = _model_values(results, "satisfaction", SATISFACTION_METRIC)
  first = next(iter(results["satisfaction"].values()))
  return {SETTING: influence, "workdir": run_name(influence),
          "users": first.get("users"), "satisfaction": satisfaction,
          "ranking": _model_values(results, "ranking", RANKING_METRIC),
          "comparisons": comparisons}


def collect(results_by_influence: dict[float, dict], dataset: str,
            dataset_options: str = "", split_strategy: str = "") -> dict:
  """sweep.json's dict (module docstring) from each run's results dict.

  Args:
    results_by_influence: {user_influence: results dict (ctxtag.study)}.
    dataset: the runs' config.dataset.
    dataset_options: the options every run shares (without the influence).
    split_strategy: the runs' config.split_strategy.
  """
  influences = sorted(results_by_influence)
  bootstrap = results_by_influence[influences[0]].get("bootstrap") or {}
  return {"dataset": dataset, "dataset_options": dataset_options,
          "split_strategy": split_strategy,
          "confidence": bootstrap.get("confidence"),
          "runs": [summarize_run(x, results_by_influence[x])
                   for x in influences]}


def _cell(value, ci=None) -> str:
  """"0.291 [0.280, 0.303]"; "" for an undefined value."""
  if value is None or not math.isfinite(value):
    return ""
  text = f"{value:.3f}"
  if ci and None not in ci:
    text += f" [{ci[0]:.3f}, {ci[1]:.3f}]"
  return text


def _p_text(p_value) -> str:
  if p_value is None or not math.isfinite(p_value):
    return ""
  if p_value == 0:  # below the smallest float scipy returns
    return "p < 1e-300"
  return f"p {p_value:.3f}" if p_value >= 0.001 else f"p {p_value:.1e}"


def _name(model: str) -> str:
  return "oracle" if model == "oracle" else report.MODEL_NAMES[model]


def _comparison_name(key: str) -> str:
  a, _, b = key.partition("_vs_")
  return f"{_name(a)} - {_name(b)}"


def _table(sweep: dict, kind: str, metric: str) -> list[str]:
  """One row per influence: each model's value, then the comparisons."""
  runs = sweep["runs"]
  models = [m for m in study.MODELS if any(m in r[kind] for r in runs)]
  keys = [f"{a}_vs_{b}" for a, b in study.COMPARISONS
          if any(f"{a}_vs_{b}" in r["comparisons"] for r in runs)]
  lines = [f"| {SETTING} | " + " | ".join(
      [_name(m) for m in models] + [_comparison_name(k) for k in keys])
           + " |", "|---|" + "---|" * (len(models) + len(keys))]
  for run in runs:
    cells = [_cell(run[kind][m][metric], run[kind][m][f"{metric}_ci"])
             if m in run[kind] else "" for m in models]
    for key in keys:
      entry = run["comparisons"].get(key, {}).get(metric)
      cells.append("" if entry is None else " ".join(filter(None, [
          _cell(entry["difference"], entry["ci"]),
          f"({_p_text(entry['p_value'])})" if _p_text(entry["p_value"])
          else ""])))
    lines.append(f"| {number_text(run[SETTING])} | " + " | ".join(cells)
                 + " |")
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
  """sweep.md: satisfaction F1 and ranking MRR per influence and model."""
  lines = ["# The user-influence study", "", _description(sweep), "",
           "## User satisfaction F1", ""]
  lines += _table(sweep, "satisfaction", SATISFACTION_METRIC)
  lines += ["", "## Ranking MRR of the true context", ""]
  lines += _table(sweep, "ranking", RANKING_METRIC)
  lines += ["", "Each run: `<workdir>/influence_<x>/` (report.md,"
            " results.json)."]
  return "\n".join(lines) + "\n"


def _error_bars(values, cis):
  """(2, n) distances from each value down and up to its interval."""
  return [[max(v - ci[0], 0) if ci and None not in ci else 0
           for v, ci in zip(values, cis)],
          [max(ci[1] - v, 0) if ci and None not in ci else 0
           for v, ci in zip(values, cis)]]


def _plot_lines(axis, influences, series: dict) -> None:
  """One line with error bars per series: {key: (label, values, cis)}."""
  span = (max(influences) - min(influences)) or 1.0
  for number, (key, (label, values, cis)) in enumerate(series.items()):
    shift = (number - (len(series) - 1) / 2) * _DODGE * span
    defined = [v is not None for v in values]
    xs = [x + shift for x, d in zip(influences, defined) if d]
    ys = [v for v, d in zip(values, defined) if d]
    style, colour = _STYLES.get(key, ("o-", None))
    axis.errorbar(xs, ys, yerr=_error_bars(
        ys, [c for c, d in zip(cis, defined) if d]), fmt=style,
                  color=colour, capsize=3, label=label)


def plot(sweep: dict) -> bytes:
  """sweep.png: satisfaction F1 against influence for every model, and
  the comparisons' differences, with their intervals as error bars."""
  runs = sweep["runs"]
  influences = [run[SETTING] for run in runs]
  figure = mpl_figure.Figure(figsize=(10, 3.8))
  left, right = figure.subplots(1, 2)
  models = [m for m in study.MODELS if any(m in r["satisfaction"]
                                           for r in runs)]
  _plot_lines(left, influences, {
      m: (_name(m), [r["satisfaction"].get(m, {}).get("f1") for r in runs],
          [r["satisfaction"].get(m, {}).get("f1_ci") for r in runs])
      for m in models})
  keys = [f"{a}_vs_{b}" for a, b in study.COMPARISONS
          if any(f"{a}_vs_{b}" in r["comparisons"] for r in runs)]
  _plot_lines(right, influences, {
      k: (_comparison_name(k),
          [r["comparisons"].get(k, {}).get("f1", {}).get("difference")
           for r in runs],
          [r["comparisons"].get(k, {}).get("f1", {}).get("ci")
           for r in runs]) for k in keys})
  right.axhline(0, color="grey", linewidth=0.8)
  split = (f", {sweep['split_strategy']} split" if sweep["split_strategy"]
           else "")
  left.set(title=f"User satisfaction F1{split}", xlabel=SETTING,
           ylabel="F1 (bars: interval over users)")
  right.set(title="Difference in satisfaction F1", xlabel=SETTING,
            ylabel="F1 difference")
  for axis in (left, right):
    axis.set_xticks(influences, [number_text(x) for x in influences])
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)
  figure.tight_layout()
  buffer = io.BytesIO()
  figure.savefig(buffer, format="png", dpi=80)
  return buffer.getvalue()


def write_outputs(workdir: str, sweep: dict) -> list[str]:
  """Writes sweep.json, sweep.md and sweep.png together (or none)."""
  contents = {
      os.path.join(workdir, "sweep.json"): json.dumps(
          files.strict_json(sweep), indent=2, allow_nan=False) + "\n",
      os.path.join(workdir, "sweep.md"): table_text(sweep),
      os.path.join(workdir, "sweep.png"): plot(sweep)}
  report.write_together(contents)
  return list(contents)


def run(config: ml_collections.ConfigDict, workdir: str,
        influences, reproduce, split_strategy: str | None = None,
        log=print) -> dict:
  """Runs the study at each influence, then writes the sweep's outputs.

  A run whose results.json exists is reused; an unfinished one is handed to
  `reproduce` again, which resumes it from its checkpoints.

  Args:
    config: the run config shared by every run.
    workdir: the sweep's directory; run x goes to `<workdir>/influence_<x>`.
    influences: the user_influence values, run in this order.
    reproduce: `reproduce(config, run_dir)` runs the whole study
      (launch.reproduce.reproduce).
    split_strategy: every run's split (None: the config's).
    log: where progress lines go.

  In a run on several processes (ctxtag.distributed) every process calls
  `reproduce`; process 0 decides which runs are finished and writes the
  sweep's outputs.

  Returns:
    The sweep dict written to sweep.json; None on processes other than 0.
  """
  configs = {x: config_at(config, x, split_strategy) for x in influences}
  for number, (influence, run_config_x) in enumerate(configs.items(), 1):
    run_dir = os.path.join(workdir, run_name(influence))
    where = (f"{SETTING} {number_text(influence)} ({number} of"
             f" {len(configs)}): {run_dir}")
    if distributed.on_main(f"check {run_dir}", functools.partial(
        finished, run_dir, run_config_x), share=True):
      log(f"sweep: {where} finished earlier; reusing its results.json")
      continue
    log(f"sweep: {where}")
    start = time.time()
    reproduce(run_config_x, run_dir)
    log(f"sweep: {SETTING} {number_text(influence)} done in"
        f" {(time.time() - start) / 60:.1f} min")
  return distributed.on_main("write the sweep", functools.partial(
      _collect_and_write, config, workdir, influences, split_strategy))


def _collect_and_write(config, workdir: str, influences,
                       split_strategy: str | None) -> dict:
  """`run`'s last part: the runs' results, collected and written."""
  results = {x: load_results(os.path.join(workdir, run_name(x)))
             for x in influences}
  sweep = collect(results, config.dataset, config.dataset_options,
                  config.split_strategy if split_strategy is None
                  else split_strategy)
  write_outputs(workdir, sweep)
  return sweep
