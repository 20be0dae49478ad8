"""What a sweep reads of each finished run and keeps in sweep.json's runs:
whether a point is finished, its results.json checked, its entry.

A run writes results.json last, so its presence (beside a config.json that
is the point's) means done.
"""

import json
import os

import ml_collections

from ctxtag import errors
from ctxtag import run_config
from ctxtag.sweep import axes as axes_lib
from ctxtag.sweep import model_lookups

# What the sweep keeps of each run: a satisfaction and a ranking metric,
# and the comparisons that say whether the user and the audio each help.
SATISFACTION_METRIC = "f1"
RANKING_METRIC = "mrr"


def finished(run_dir: str, config: ml_collections.ConfigDict) -> bool:
  """Whether the run in `run_dir` is complete and made with `config`.

  Args:
    run_dir: a point's directory.
    config: the point's config.

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

  Args:
    run_dir: a finished run.

  Returns:
    Its results dict.

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
  """{model: {metric, metric_ci}} in the sweep's model order."""
  return {model: {metric: results[kind][model][metric],
                  f"{metric}_ci": results[kind][model][f"{metric}_ci"]}
          for model in model_lookups.model_order()
          if model in results.get(kind, {})}


def summarize_run(point_values: dict, results: dict, workdir: str) -> dict:
  """One entry of sweep.json's runs from a run's results dict.

  Args:
    point_values: the run's value on each axis, {axis key: value}.
    results: its results dict.
    workdir: its directory, relative to the sweep's.

  Returns:
    {"settings", "user_influence" (where it is an axis), "workdir",
    "users", "satisfaction", "ranking", "comparisons"} (ctxtag.sweep).
  """
  comparisons = {}
  for a, b in model_lookups.comparisons():
    entry = results.get("comparisons", {}).get(f"{a}_vs_{b}")
    if entry is not None:
      comparisons[f"{a}_vs_{b}"] = {
          metric: {key: entry[metric][key]
                   for key in ("difference", "ci", "p_value")}
          for metric in (SATISFACTION_METRIC, RANKING_METRIC)}
  first = next(iter(results["satisfaction"].values()))
  entry = {"settings": point_values}
  if axes_lib.INFLUENCE_KEY in point_values:
    entry[axes_lib.INFLUENCE_FIELD] = point_values[axes_lib.INFLUENCE_KEY]
  entry.update({
      "workdir": workdir, "users": first.get("users"),
      "satisfaction": _model_values(results, "satisfaction",
                                    SATISFACTION_METRIC),
      "ranking": _model_values(results, "ranking", RANKING_METRIC),
      "comparisons": comparisons})
  return entry


def collect_points(axes: list[axes_lib.Axis], results_by_point: dict,
                   dataset: str, dataset_options: str = "",
                   split_strategy: str = "",
                   groups: list | None = None) -> dict:
  """sweep.json's dict (ctxtag.sweep) from each run's results dict.

  Args:
    axes: the sweep's axes.
    results_by_point: {workdir (relative): (point values, results dict)}.
    dataset: the runs' config.dataset.
    dataset_options: the options every run shares (without the world's
      axes).
    split_strategy: the runs' config.split_strategy.
    groups: sweep.json's groups (ctxtag.sweep.groups), if `seed` is an
      axis.

  Returns:
    The dict, its runs sorted by their values, the first axis first.
  """
  order = axes_lib.sort_key(axes)
  entries = sorted(results_by_point.items(),
                   key=lambda item: order(item[1][0]))
  first = entries[0][1][1]
  bootstrap_info = first.get("bootstrap") or {}
  sweep = {"dataset": dataset, "dataset_options": dataset_options,
           "split_strategy": split_strategy,
           "confidence": bootstrap_info.get("confidence"),
           "axes": [{"key": a.key, "label": a.label, "values": list(a.values)}
                    for a in axes],
           "runs": [summarize_run(point_values, results, path)
                    for path, (point_values, results) in entries]}
  if groups is not None:
    sweep["groups"] = groups
  return sweep
