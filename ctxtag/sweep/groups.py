"""A sweep's groups over training seeds: the runs of each setting of the
other axes, their per-user values re-read from the prediction tables, and
two-level bootstrap intervals over seeds and test users
(ctxtag.evaluation.bootstrap.two_level).

Seeds share their test users where their runs' datasets are the same (the
dataset does not depend on `seed`: the simulated world's own split), and
have a user draw each where a re-split seeded by `seed` gives each its own
(config split_strategy). A group's comparisons are every pair of its
models in the sweep's model order, named as results.json names them and
else later model first (`oracle_vs_audio`).
"""

import itertools
import json
import os

import ml_collections
import numpy as np

from ctxtag import datasets
from ctxtag import errors
from ctxtag import predictions
from ctxtag import study
from ctxtag import tables
from ctxtag.evaluation import bootstrap
from ctxtag.evaluation import protocols
from ctxtag.evaluation import ranking
from ctxtag.evaluation import users as users_lib
from ctxtag.sources import options as options_lib
from ctxtag.sweep import axes as axes_lib
from ctxtag.sweep import model_lookups
from ctxtag.sweep import results as results_lib
from tfds_builders import contextual_tags

# A group's metrics: its name -> (results.json's kind, metric).
GROUP_METRICS = {
    "satisfaction_f1": ("satisfaction", results_lib.SATISFACTION_METRIC),
    "ranking_mrr": ("ranking", results_lib.RANKING_METRIC)}
# Per-user values recomputed from the prediction tables must give
# results.json's means; more than float noise apart, the tables changed.
_CONSISTENCY = 1e-9


def per_user_values(run_dir: str, results: dict, split: str = "test"):
  """Each test user's satisfaction F1 and MRR per model, from the run's
  prediction tables, as study.evaluate computes them.

  Args:
    run_dir: a finished run.
    results: its results.json (the models; checked against).
    split: the evaluated split.

  Returns:
    (user ids (U,), sorted; {model: (U, 2): satisfaction F1, MRR}) for the
    models of results["satisfaction"], in the sweep's model order.

  Raises:
    errors.UserError: for a missing table, or tables whose means are not
      results.json's (changed after the evaluation).
  """
  paths = {what: predictions.path(run_dir, split, what)
           for what in ("groundtruth", *results["satisfaction"])}
  for path in paths.values():
    if not os.path.exists(path):
      raise errors.UserError(
          f"{path}: missing; the sweep's seed groups need each run's"
          f" prediction tables: re-evaluate with `python -m launch.evaluate"
          f" --workdir={run_dir}`")
  truth = tables.read_groundtruth(paths["groundtruth"])
  users = users_lib.Users.from_ids(truth.user_id)
  truth_PxC = truth.values_RxC > 0
  values = {}
  for model in (m for m in model_lookups.model_order()
                if m in results["satisfaction"]):
    if model == "audio":
      song_ids, track_P, _ = study.track_truth(truth)
      scores = tables.align(tables.read_audio_predictions(paths[model]),
                            (song_ids,), "song")[track_P]
    else:
      scores = tables.align(tables.read_pair_predictions(paths[model]),
                            (truth.song_id, truth.user_id), "(song, user)")
    f1 = protocols.satisfaction_per_user(
        users, truth_PxC, protocols.one_hot_argmax(scores))["f1"]
    mrr = ranking.per_user(users, truth_PxC, scores)[
        :, ranking.METRICS.index(results_lib.RANKING_METRIC)]
    for column, (kind, metric) in zip((f1, mrr), GROUP_METRICS.values()):
      saved = results[kind][model][metric]
      if abs(column.mean() - saved) > _CONSISTENCY:
        raise errors.UserError(
            f"{paths[model]}: gives {model}'s {kind} {metric}"
            f" {column.mean():.6f}, results.json {saved:.6f}: the tables"
            " changed after the evaluation; re-evaluate with `python -m"
            f" launch.evaluate --workdir={run_dir}`")
    values[model] = np.stack([f1, mrr], axis=1)
  return users.ids_U, values


def comparison_pairs(models) -> list[tuple[str, str]]:
  """Every pair of `models`, as (a, b) for a - b.

  Args:
    models: model names.

  Returns:
    The pairs in the sweep's model order, each in results.json's
    orientation where it compares them, else the later model first.
  """
  present = [m for m in model_lookups.model_order() if m in models]
  pairs = []
  for first, second in itertools.combinations(present, 2):
    pairs.append((first, second)
                 if (first, second) in model_lookups.comparisons()
                 else (second, first))
  return pairs


def summarize_group(other_values: dict, seeds: list, per_seed: list,
                    bootstrap_settings: bootstrap.Settings,
                    shared_users: bool) -> dict:
  """One entry of sweep.json's groups (ctxtag.sweep).

  Args:
    other_values: the group's value on each axis other than `seed`.
    seeds: its seeds, in order.
    per_seed: each seed's {model: (users, 2) satisfaction F1 and MRR}, the
      users of all seeds the same when `shared_users`.
    bootstrap_settings: the resamples and confidence of the intervals.
    shared_users: one user draw for all seeds (else one within each).

  Returns:
    {"settings", "seeds", "test_users", "models", "comparisons"}: each
    model's and each pair's "satisfaction_f1" and "ranking_mrr" over the
    seeds (ctxtag.sweep).
  """
  models = [m for m in model_lookups.model_order()
            if all(m in run for run in per_seed)]
  group = {"settings": other_values, "seeds": list(seeds),
           "test_users": "shared" if shared_users else "per seed",
           "models": {}, "comparisons": {}}
  if not models:  # seeds that evaluated different models share none
    return group
  pairs = comparison_pairs(models)
  columns = [np.concatenate(
      [run[m] for m in models] + [run[a] - run[b] for a, b in pairs], axis=1)
             for run in per_seed]
  mean, cis, per_seed_means = bootstrap.two_level(columns, bootstrap_settings,
                                                  shared_users)
  names = list(GROUP_METRICS)

  def entry(column: int) -> dict:
    return {"mean": float(mean[column]), "ci": cis[column].tolist(),
            "per_seed": per_seed_means[:, column].tolist()}

  for number, model in enumerate(models):
    group["models"][model] = {
        name: entry(2 * number + k) for k, name in enumerate(names)}
  for number, (a, b) in enumerate(pairs):
    comparison = {}
    for k, name in enumerate(names):
      values = entry(2 * (len(models) + number) + k)
      comparison[name] = {
          "difference": values["mean"], "ci": values["ci"],
          "seeds_won": int(sum(v > 0 for v in values["per_seed"])),
          "seeds": len(seeds), "per_seed": values["per_seed"]}
    group["comparisons"][f"{a}_vs_{b}"] = comparison
  return group


def _dataset_name(config: ml_collections.ConfigDict) -> str:
  """The built dataset's config name: another name, other data."""
  return contextual_tags.config_with_overrides(
      config.dataset.partition("/")[2],
      options_lib.parse(config.dataset_options),
      datasets.split_settings(config)).name


def _per_seed_values(workdir: str, members: list, results: dict,
                     shared: bool) -> list[dict]:
  """Each member point's per-user values, in order; shared test users
  checked to be the same users."""
  per_seed, user_ids = [], None
  for point in members:
    ids, values = per_user_values(os.path.join(workdir, point.path),
                                  results[point.path])
    if shared and user_ids is not None and not np.array_equal(ids, user_ids):
      raise errors.UserError(
          f"{os.path.join(workdir, point.path)}: its test users differ from"
          f" {os.path.join(workdir, members[0].path)}'s though both were"
          " made on the same dataset; rerun one of them")
    user_ids = ids
    per_seed.append(values)
  return per_seed


def seed_groups(axes: list[axes_lib.Axis], points: list[axes_lib.Point],
                workdir: str, results: dict) -> list[dict]:
  """sweep.json's groups: the runs of each value of the other axes.

  Seeds share their test users where their runs' datasets are the same
  (the same dataset name: the split does not depend on `seed`).

  Args:
    axes: the sweep's axes, `seed` among them.
    points: its points.
    workdir: the sweep's directory.
    results: {point path: results dict}.

  Returns:
    The groups (`summarize_group`), sorted by their values.

  Raises:
    errors.UserError: for missing or changed prediction tables, or seeds
      said to share their test users that do not.
  """
  others = [axis for axis in axes if axis.key != axes_lib.SEED_KEY]
  order = axes_lib.sort_key(others)
  grouped = {}
  for point in points:
    other_values = {a.key: point.values[a.key] for a in others}
    grouped.setdefault(json.dumps(other_values, sort_keys=True),
                       (other_values, []))[1].append(point)
  first = results[points[0].path].get("bootstrap") or {}
  bootstrap_settings = bootstrap.Settings(
      **{k: first[k] for k in ("resamples", "seed", "confidence")
         if k in first})
  groups = []
  for other_values, members in sorted(grouped.values(),
                                      key=lambda item: order(item[0])):
    members = sorted(members, key=lambda p: p.values[axes_lib.SEED_KEY])
    shared = len({_dataset_name(p.config) for p in members}) == 1
    groups.append(summarize_group(
        other_values, [p.values[axes_lib.SEED_KEY] for p in members],
        _per_seed_values(workdir, members, results, shared),
        bootstrap_settings, shared))
  return groups
