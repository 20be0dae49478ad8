"""Sweeps: the paper's study across settings, worlds and training seeds.

The simulated world draws each pair's context from a mix of the track's
audio and the user's taste, weighted by `user_influence` (0: the audio
alone decides, 1: the user alone). Running the whole study at several
weights shows when modelling the user pays: the audio + user model's gain
over the audio model should be nil at 0 and grow with the weight. With a
`cold_user` or `cold_track` split the same study shows what a new user or
a new track gets. Any other setting can be swept the same way, and over
training seeds a sweep says how much of a difference is the seed's.

A sweep is a grid of axes, each a key and its values: a run-config key
(`seed`, `audio_user.fusion`, `audio.learning_rate`; values of the type of
the config's value) or a setting of the simulated world, `world.<field>`
(a field of ctxtag.sources.simulated.SimulationConfig, applied through the
config's `dataset_options`). `run` runs one reproduction
(ctxtag.run.reproduce) per point of the grid (the Cartesian product, axes in
order) into `<workdir>/<label>_<value>[/<label>_<value>...]/`, a label being
the key's last component (`seed_3/fusion_late`), the whole key where two
axes share one, and `influence` for world.user_influence (today's
`influence_<x>/`). Then it writes `sweep.json`, `sweep.md` and `sweep.png`
into the workdir. Everything else here is a pure function of the runs'
results dicts and prediction tables.

sweep.json:
  {"dataset", "dataset_options" (the options shared by every run),
   "split_strategy", "confidence",
   "axes": [{"key", "label", "values"}],
   "runs": [{"settings": {key: value}, "user_influence" (if it is an axis),
             "workdir" (relative to the sweep's), "users",
             "satisfaction": {model: {"f1", "f1_ci"}},
             "ranking": {model: {"mrr", "mrr_ci"}},
             "comparisons": {"<a>_vs_<b>": {"f1" | "mrr":
                             {"difference", "ci", "p_value"}}}}],
   "groups" (only when `seed` is an axis): [
            {"settings": {the other axes' key: value}, "seeds": [...],
             "test_users": "shared" | "per seed",
             "models": {model: {"satisfaction_f1" | "ranking_mrr":
                                {"mean", "ci", "per_seed"}}},
             "comparisons": {"<a>_vs_<b>": {"satisfaction_f1" |
                             "ranking_mrr": {"difference", "ci",
                             "seeds_won", "seeds", "per_seed"}}}}]}
runs sorted by their settings, axes in order; groups likewise; models and
run comparisons as in results.json (ctxtag.study), those the runs have.
A group's `mean` is the mean over its seeds of each run's mean over users;
`ci` is a two-level bootstrap interval (ctxtag.evaluation.bootstrap): seeds
resampled, and test users, with one draw shared by the seeds where they
share their test split (the dataset does not depend on `seed`: the
simulated world's own split), drawn within each seed where a re-split
seeded by `seed` gives each its own (config split_strategy). Its
comparisons are every pair of its models in study.MODELS order, named as
results.json names them and else later model first (`oracle_vs_audio`);
`seeds_won` counts the seeds whose difference is above 0.
"""

import dataclasses
import functools
import io
import itertools
import json
import math
import os
import re
import time

from matplotlib import figure as mpl_figure
import ml_collections
import numpy as np

from ctxtag import datasets
from ctxtag import distributed
from ctxtag import errors
from ctxtag import files
from ctxtag import predictions
from ctxtag import report
from ctxtag import run as run_lib
from ctxtag import run_config
from ctxtag import study
from ctxtag import tables
from ctxtag.configs import default
from ctxtag.evaluation import bootstrap
from ctxtag.evaluation import protocols
from ctxtag.evaluation import ranking
from ctxtag.evaluation import users as users_lib
from ctxtag.sources import options as options_lib
from ctxtag.sources import simulated
from tfds_builders import contextual_tags

SETTING = "user_influence"  # the simulated world's field (SimulationConfig)
WORLD = "world."  # the prefix of a simulated world's setting as an axis key
INFLUENCE_KEY = WORLD + SETTING
INFLUENCE_LABEL = "influence"  # its directories: influence_<x>
SEED_KEY = "seed"  # the axis whose runs are grouped
SIMULATED = "contextual_tags/simulated"  # the configs that have the setting
DEFAULT_INFLUENCES = (0.0, 0.25, 0.5, 0.75, 1.0)
# What the sweep keeps of each run: a satisfaction and a ranking metric,
# and the comparisons that say whether the user and the audio each help.
SATISFACTION_METRIC = "f1"
RANKING_METRIC = "mrr"
# A group's metrics: its name -> (results.json's kind, metric).
GROUP_METRICS = {"satisfaction_f1": ("satisfaction", SATISFACTION_METRIC),
                 "ranking_mrr": ("ranking", RANKING_METRIC)}
OUTPUTS = ("sweep.json", "sweep.md", "sweep.png")
# What a value may name in a directory; anything else is refused up front
# rather than escaped, so that names read back as the values.
_NAME_TEXT = re.compile(r"[A-Za-z0-9._+-]+")
# Per-user values recomputed from the prediction tables must give
# results.json's means; more than float noise apart, the tables changed.
_CONSISTENCY = 1e-9
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


def value_text(value) -> str:
  """A setting's value as a directory name and a table cell: 0.25, 3, true,
  late, 8-16-32 (a tuple), '' (the empty string)."""
  if isinstance(value, bool):
    return "true" if value else "false"
  if isinstance(value, float):
    return number_text(value)
  if isinstance(value, (tuple, list)):
    return "-".join(value_text(item) for item in value) or "()"
  if value == "":
    return "''"
  return str(value)


def run_name(influence: float) -> str:
  """The run's directory inside the sweep's workdir."""
  return f"{INFLUENCE_LABEL}_{number_text(influence)}"


@dataclasses.dataclass(frozen=True)
class Axis:
  """One varied setting.

  Attributes:
    key: a run-config path ("seed", "audio.learning_rate") or
      "world.<field>" (a setting of the simulated world).
    values: its values, parsed, in the order run.
    label: what names its directories, `<label>_<value>`.
  """
  key: str
  values: tuple
  label: str

  @property
  def header(self) -> str:
    """Its column in sweep.md: the key (user_influence for the world's)."""
    return SETTING if self.key == INFLUENCE_KEY else self.key

  def name(self, value) -> str:
    """The directory of a run at `value`: label_value (label_ for the
    empty string, which no shell needs quoted)."""
    return f"{self.label}_{'' if value == '' else value_text(value)}"


def _split_top_level(text: str) -> list[str]:
  """Splits at commas outside parentheses: "(1,2),(3,4)" -> two items."""
  items, depth, start = [], 0, 0
  for position, character in enumerate(text):
    depth += {"(": 1, ")": -1}.get(character, 0)
    if character == "," and depth == 0:
      items.append(text[start:position])
      start = position + 1
  items.append(text[start:])
  return [item.strip() for item in items]


def parse_vary(text: str) -> tuple[str, list[str]]:
  """"KEY=V1,V2" -> (KEY, ["V1", "V2"]); the values stay text (their type
  is the config's, `make_axes`). A tuple value is parenthesised:
  audio.conv_widths=(8,16,32,64),(16,32,64,128).

  Raises:
    errors.ConfigError: without "=", a key or a value.
  """
  key, equals, values = text.partition("=")
  key = key.strip()
  if not equals or not key:
    raise errors.ConfigError(
        f"--vary {text!r} is not KEY=V1,V2,...; e.g. --vary=seed=0,1,2 or"
        " --vary=world.user_influence=0,0.5")
  items = _split_top_level(values)
  if not values.strip() or "" in items:
    raise errors.ConfigError(f"--vary {text!r}: an empty value; write the"
                             " empty string as ''")
  return key, items


def _config_value(config: ml_collections.ConfigDict, key: str):
  """The config's current value at `key` (a dotted path).

  Raises:
    errors.ConfigError: for an unknown key or a section.
  """
  node, path = config, []
  for part in key.split("."):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      where = f" in {'.'.join(path)}" if path else ""
      known = (sorted(node) if isinstance(node, ml_collections.ConfigDict)
               else [])
      raise errors.ConfigError(
          f"--vary {key}: unknown config key; known{where}: {known}, or"
          f" {WORLD}<field> for a setting of the simulated world")
    node = node[part]
    path.append(part)
  if isinstance(node, ml_collections.ConfigDict):
    raise errors.ConfigError(f"--vary {key}: a section of the config; name"
                             f" one of its keys, e.g. {key}.{sorted(node)[0]}")
  return node


def _world_default(key: str):
  """The simulated world's default for `world.<field>`.

  Raises:
    errors.ConfigError: for a field the world does not have.
  """
  field = key[len(WORLD):]
  fields = {f.name for f in dataclasses.fields(simulated.SimulationConfig)}
  if field not in fields:
    raise errors.ConfigError(f"--vary {key}: unknown setting of the simulated"
                             f" world; known: {sorted(fields)}")
  return getattr(simulated.SimulationConfig(), field)


def _scalar(key: str, text, kind):
  """One value of type `kind` from text (or a Python value)."""
  if not isinstance(text, str):
    if kind is float and isinstance(text, int) and not isinstance(text, bool):
      text = float(text)
    if type(text) is not kind:  # pylint: disable=unidiomatic-typecheck
      raise errors.ConfigError(f"--vary {key}: {text!r} is not of type"
                               f" {kind.__name__}")
    return text
  if kind is str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
      return text[1:-1]
    return text
  return options_lib.convert(kind, text, f"--vary {key}: {text!r}")


def _value(key: str, text, current):
  """A value of `current`'s type (a tuple's items of its first item's)."""
  if isinstance(current, tuple):
    kind = type(current[0]) if current else str
    if isinstance(text, str):
      if not (text.startswith("(") and text.endswith(")")):
        raise errors.ConfigError(
            f"--vary {key}: {text!r} is not a tuple; write each value in"
            f" parentheses, e.g. {key}=({','.join(map(str, current))})")
      inner = text[1:-1].strip()
      text = _split_top_level(inner) if inner else []
    if not isinstance(text, (tuple, list)):
      raise errors.ConfigError(f"--vary {key}: {text!r} is not a tuple")
    return tuple(_scalar(key, item, kind) for item in text)
  if current is None:
    return _scalar(key, text, str)
  return _scalar(key, text, type(current))


def _axis_values(config, key: str, texts) -> tuple:
  current = (_world_default(key) if key.startswith(WORLD)
             else _config_value(config, key))
  values = []
  for text in texts:
    value = _value(key, text, current)
    if value in values:
      raise errors.ConfigError(f"--vary {key}: {value_text(value)} is given"
                               " twice")
    name = value_text(value)
    if not _NAME_TEXT.fullmatch(name) and name != "''":
      raise errors.ConfigError(
          f"--vary {key}: {value!r} cannot name a directory; values may"
          " hold letters, digits and . _ + - only")
    values.append(value)
  if len({value_text(v) for v in values}) < len(values):
    raise errors.ConfigError(f"--vary {key}: two values give the same"
                             " directory name; give distinct values")
  return tuple(values)


def make_axes(config: ml_collections.ConfigDict, vary=(), influences=None,
              split_strategy: str | None = None) -> list[Axis]:
  """The sweep's axes, checked against `config`.

  Args:
    config: the sweep's run config.
    vary: "KEY=V1,V2" texts (the --vary flags) or (key, values) pairs, the
      values text or of the config's types.
    influences: user_influence values (--influences): the first axis,
      world.user_influence. Without it and `vary`, DEFAULT_INFLUENCES.
    split_strategy: the sweep's --split_strategy (then split_strategy is no
      axis).

  Returns:
    The axes in order: the influences', then `vary`'s.

  Raises:
    errors.ConfigError: for an unknown key, a bad value, a key given twice.
  """
  pairs = [parse_vary(item) if isinstance(item, str) else item
           for item in vary]
  if influences is None and not pairs:
    influences = DEFAULT_INFLUENCES
  if influences is not None:
    pairs.insert(0, (INFLUENCE_KEY, [float(x) for x in influences]))
  keys = [key for key, _ in pairs]
  for key in keys:
    if keys.count(key) > 1:
      also = (f" (--influences is --vary={INFLUENCE_KEY})"
              if key == INFLUENCE_KEY else "")
      raise errors.ConfigError(f"--vary {key} is given twice{also}; give its"
                               " values once")
    if key == "dataset_options":
      raise errors.ConfigError(
          f"--vary dataset_options: vary the world's settings one by one as"
          f" {WORLD}<field>, e.g. --vary={WORLD}track_sharpness=2,4")
    if key == "split_strategy" and split_strategy is not None:
      raise errors.ConfigError(
          "--vary split_strategy and --split_strategy both set the split;"
          " give one")
  labels = [INFLUENCE_LABEL if key == INFLUENCE_KEY else key.rpartition(".")[2]
            for key in keys]
  labels = [key if labels.count(label) > 1 else label
            for key, label in zip(keys, labels)]
  return [Axis(key, _axis_values(config, key, values), label)
          for (key, values), label in zip(pairs, labels)]


def _with_world(config: ml_collections.ConfigDict, world: dict) -> str:
  """`config`'s dataset options with the world's settings `world` added.

  Raises:
    errors.ConfigError: if the dataset is not the simulated world, or its
      options already set one of `world`'s fields.
  """
  field = next(iter(world))
  if not config.dataset.startswith(SIMULATED):
    raise errors.ConfigError(
        f"config dataset={config.dataset!r}: varying {WORLD}{field} needs"
        f" the simulated world ({SIMULATED} or one of its variants), whose"
        " setting it is")
  options = [item.strip() for item in config.dataset_options.split(",")
             if item.strip()]
  for item in options:
    if item.partition("=")[0].strip() in world:
      raise errors.ConfigError(
          f"config dataset_options={config.dataset_options!r} sets"
          f" {item.partition('=')[0].strip()}, which the sweep sets for each"
          " run from --influences or --vary; remove it")
  return ",".join(options + [f"{key}={value_text(value)}"
                             for key, value in world.items()])


def point_config(config: ml_collections.ConfigDict, settings: dict,
                 split_strategy: str | None = None
                 ) -> ml_collections.ConfigDict:
  """`config` with a point's settings (and the split).

  Args:
    config: the sweep's run config; left unchanged.
    settings: {axis key: value}: config paths are set, `world.<field>`
      values are appended to dataset_options as field=value.
    split_strategy: replaces config.split_strategy unless None.

  Raises:
    errors.ConfigError: as `_with_world`.
  """
  changed = config.copy_and_resolve_references()
  world = {}
  for key, value in settings.items():
    if key.startswith(WORLD):
      world[key[len(WORLD):]] = value
      continue
    *path, last = key.split(".")
    node = changed
    for part in path:
      node = node[part]
    node[last] = value
  if world:
    changed.dataset_options = _with_world(changed, world)
  if split_strategy is not None:
    changed.split_strategy = split_strategy
  return changed


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
  return point_config(config, {INFLUENCE_KEY: influence}, split_strategy)


@dataclasses.dataclass(frozen=True)
class Point:
  """One run of a sweep: its settings, directory and config."""
  settings: dict
  path: str  # relative to the sweep's workdir
  config: ml_collections.ConfigDict

  def describe(self, axes: list[Axis]) -> str:
    return ", ".join(f"{axis.header} {value_text(self.settings[axis.key])}"
                     for axis in axes)


def grid(config: ml_collections.ConfigDict, axes: list[Axis],
         split_strategy: str | None = None) -> list[Point]:
  """Every point of the axes' product, in run order, each config checked.

  Args:
    config: the sweep's run config.
    axes: from `make_axes`.
    split_strategy: every run's split (None: the config's).

  Returns:
    The points, the last axis varying fastest.

  Raises:
    errors.ConfigError: naming the first point whose config a run would
      refuse (ctxtag.run_config, the dataset's settings).
  """
  points = []
  names = [c.name for c in contextual_tags.BUILDER_CONFIGS]
  for values in itertools.product(*(axis.values for axis in axes)):
    settings = {axis.key: value for axis, value in zip(axes, values)}
    path = os.path.join(*(axis.name(value)
                          for axis, value in zip(axes, values)))
    # Its errors name the config's key, whatever the point.
    changed = point_config(config, settings, split_strategy)
    try:
      run_config.validate(changed, declared=default.get_config(),
                          datasets=names)
      datasets.check_dataset_settings(changed)
    except errors.ConfigError as error:
      raise errors.ConfigError(f"sweep point {path}: {error}") from None
    points.append(Point(settings, path, changed))
  return points


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


def per_user_values(run_dir: str, results: dict, split: str = "test"):
  """Each test user's satisfaction F1 and MRR per model, from the run's
  prediction tables, as study.evaluate computes them.

  Args:
    run_dir: a finished run.
    results: its results.json (the models; checked against).
    split: the evaluated split.

  Returns:
    (user ids (U,), sorted; {model: (U, 2): satisfaction F1, MRR}) for the
    models of results["satisfaction"], in study.MODELS order.

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
  for model in (m for m in study.MODELS if m in results["satisfaction"]):
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
        :, ranking.METRICS.index(RANKING_METRIC)]
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
  """Every pair of `models` in study.MODELS order, as (a, b) for a - b:
  results.json's orientation where it compares them, else the later model
  first."""
  present = [m for m in study.MODELS if m in models]
  pairs = []
  for first, second in itertools.combinations(present, 2):
    pairs.append((first, second) if (first, second) in study.COMPARISONS
                 else (second, first))
  return pairs


def summarize_group(settings: dict, seeds: list, per_seed: list,
                    bootstrap_settings: bootstrap.Settings,
                    shared_users: bool) -> dict:
  """One entry of sweep.json's groups (module docstring).

  Args:
    settings: the group's other settings.
    seeds: its seeds, in order.
    per_seed: each seed's {model: (users, 2) satisfaction F1 and MRR}, the
      users of all seeds the same when `shared_users`.
    bootstrap_settings: the resamples and confidence of the intervals.
    shared_users: one user draw for all seeds (else one within each).
  """
  models = [m for m in study.MODELS if all(m in run for run in per_seed)]
  group = {"settings": settings, "seeds": list(seeds),
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


def _model_values(results: dict, kind: str, metric: str) -> dict:
  """{model: {metric, metric_ci}} in study.MODELS order."""
  return {model: {metric: results[kind][model][metric],
                  f"{metric}_ci": results[kind][model][f"{metric}_ci"]}
          for model in study.MODELS if model in results.get(kind, {})}


def summarize_run(influence: float | None, results: dict,
                  settings: dict | None = None,
                  workdir: str | None = None) -> dict:
  """One entry of sweep.json's runs from a run's results dict.

  Args:
    influence: the run's user_influence (None where it is no axis).
    results: its results dict.
    settings: its settings (default: the influence alone).
    workdir: its directory in the sweep's (default: run_name(influence)).
  """
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
  entry = {"settings": ({INFLUENCE_KEY: influence} if settings is None
                        else settings)}
  if influence is not None:
    entry[SETTING] = influence
  entry.update({"workdir": run_name(influence) if workdir is None
                else workdir,
                "users": first.get("users"), "satisfaction": satisfaction,
                "ranking": _model_values(results, "ranking", RANKING_METRIC),
                "comparisons": comparisons})
  return entry


def _sort_key(axes: list[Axis]):
  return lambda settings: tuple(settings[axis.key] for axis in axes)


def collect_points(axes: list[Axis], results_by_point: dict, dataset: str,
                   dataset_options: str = "", split_strategy: str = "",
                   groups: list | None = None) -> dict:
  """sweep.json's dict (module docstring) from each run's results dict.

  Args:
    axes: the sweep's axes.
    results_by_point: {workdir (relative): (settings, results dict)}.
    dataset: the runs' config.dataset.
    dataset_options: the options every run shares (without the world's
      axes).
    split_strategy: the runs' config.split_strategy.
    groups: sweep.json's groups (`summarize_group`), if `seed` is an axis.
  """
  order = _sort_key(axes)
  entries = sorted(results_by_point.items(), key=lambda item: order(
      item[1][0]))
  first = entries[0][1][1]
  bootstrap_info = first.get("bootstrap") or {}
  sweep = {"dataset": dataset, "dataset_options": dataset_options,
           "split_strategy": split_strategy,
           "confidence": bootstrap_info.get("confidence"),
           "axes": [{"key": a.key, "label": a.label, "values": list(a.values)}
                    for a in axes],
           "runs": [summarize_run(settings.get(INFLUENCE_KEY), results,
                                  settings, path)
                    for path, (settings, results) in entries]}
  if groups is not None:
    sweep["groups"] = groups
  return sweep


def collect(results_by_influence: dict[float, dict], dataset: str,
            dataset_options: str = "", split_strategy: str = "") -> dict:
  """sweep.json's dict of an influence sweep from each run's results dict.

  Args:
    results_by_influence: {user_influence: results dict (ctxtag.study)}.
    dataset: the runs' config.dataset.
    dataset_options: the options every run shares (without the influence).
    split_strategy: the runs' config.split_strategy.
  """
  axis = Axis(INFLUENCE_KEY, tuple(sorted(results_by_influence)),
              INFLUENCE_LABEL)
  return collect_points(
      [axis], {run_name(x): ({INFLUENCE_KEY: x}, results)
               for x, results in results_by_influence.items()},
      dataset, dataset_options, split_strategy)


def _cell(value, ci=None) -> str:
  """"0.291 [0.280, 0.303]"; "" for an undefined value."""
  if value is None or not math.isfinite(value):
    return ""
  text = f"{value:.3f}"
  if ci and None not in ci and all(map(math.isfinite, ci)):
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


def _axes(sweep: dict) -> list[Axis]:
  """The sweep's axes from its dict."""
  return [Axis(a["key"], tuple(a["values"]), a["label"])
          for a in sweep["axes"]]


def _is_influence_sweep(sweep: dict) -> bool:
  return [a["key"] for a in sweep["axes"]] == [INFLUENCE_KEY]


def _table(sweep: dict, kind: str, metric: str) -> list[str]:
  """One row per run: its settings, each model's value, the comparisons."""
  runs, axes = sweep["runs"], _axes(sweep)
  models = [m for m in study.MODELS if any(m in r[kind] for r in runs)]
  keys = [f"{a}_vs_{b}" for a, b in study.COMPARISONS
          if any(f"{a}_vs_{b}" in r["comparisons"] for r in runs)]
  lines = ["| " + " | ".join(
      [axis.header for axis in axes] + [_name(m) for m in models]
      + [_comparison_name(k) for k in keys]) + " |",
           "|---|" + "---|" * (len(axes) - 1 + len(models) + len(keys))]
  for run in runs:
    cells = [value_text(run["settings"][axis.key]) for axis in axes]
    cells += [_cell(run[kind][m][metric], run[kind][m][f"{metric}_ci"])
              if m in run[kind] else "" for m in models]
    for key in keys:
      entry = run["comparisons"].get(key, {}).get(metric)
      cells.append("" if entry is None else " ".join(filter(None, [
          _cell(entry["difference"], entry["ci"]),
          f"({_p_text(entry['p_value'])})" if _p_text(entry["p_value"])
          else ""])))
    lines.append("| " + " | ".join(cells) + " |")
  return lines


def _settings_text(settings: dict) -> str:
  return ", ".join(f"{SETTING if k == INFLUENCE_KEY else k}"
                   f" {value_text(v)}" for k, v in settings.items())


def _group_table(group: dict) -> list[str]:
  """A group's models and comparisons over its seeds."""
  seeds = ", ".join(value_text(s) for s in group["seeds"])
  users = ("one draw of the test users shared by the seeds"
           if group["test_users"] == "shared" else
           "the test users drawn within each seed (each has its own)")
  lines = [f"### {_settings_text(group['settings']) or 'All runs'}", "",
           f"Seeds {seeds}; intervals resample the seeds and {users}.", "",
           "| model | satisfaction F1 | MRR |", "|---|---|---|"]
  for model, values in group["models"].items():
    lines.append(f"| {_name(model)} | " + " | ".join(
        _cell(values[name]["mean"], values[name]["ci"])
        for name in GROUP_METRICS) + " |")
  if group["comparisons"]:
    lines += ["", "| comparison | satisfaction F1 difference | seeds won |"
              " MRR difference | seeds won |", "|---|---|---|---|---|"]
    for key, values in group["comparisons"].items():
      cells = []
      for name in GROUP_METRICS:
        entry = values[name]
        cells += [_cell(entry["difference"], entry["ci"]),
                  f"{entry['seeds_won']} / {entry['seeds']}"]
      lines.append(f"| {_comparison_name(key)} | " + " | ".join(cells)
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
  """sweep.md: satisfaction F1 and ranking MRR per run and model, and the
  groups over training seeds."""
  if _is_influence_sweep(sweep):
    title = "# The user-influence study"
    where = "`<workdir>/influence_<x>/`"
  else:
    title = "# Sweep over " + ", ".join(a.header for a in _axes(sweep))
    where = ("`<workdir>/" + "/".join(f"{a.label}_<value>"
                                      for a in _axes(sweep)) + "/`")
  lines = [title, "", _description(sweep), "",
           "## User satisfaction F1", ""]
  lines += _table(sweep, "satisfaction", SATISFACTION_METRIC)
  lines += ["", "## Ranking MRR of the true context", ""]
  lines += _table(sweep, "ranking", RANKING_METRIC)
  if sweep.get("groups"):
    lines += ["", "## Over training seeds", "",
              "Means over the seeds of each run's mean over users; brackets:"
              " two-level bootstrap interval (seeds and users); seeds won:"
              " the seeds whose difference is above 0."]
    for group in sweep["groups"]:
      lines += [""] + _group_table(group)
  lines += ["", f"Each run: {where} (report.md, results.json)."]
  return "\n".join(lines) + "\n"


def _error_bars(values, cis):
  """(2, n) distances from each value down and up to its interval."""
  return [[max(v - ci[0], 0) if ci and None not in ci else 0
           for v, ci in zip(values, cis)],
          [max(ci[1] - v, 0) if ci and None not in ci else 0
           for v, ci in zip(values, cis)]]


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
    style, colour = _STYLES.get(key, ("o-", None))
    if not numeric:
      style = style.rstrip("-") or "_"
    drawn = axis.errorbar(xs, ys, yerr=_error_bars(
        ys, [c for c, d in zip(cis, defined) if d]), fmt=style,
                          color=colour, capsize=3, label=label)
    if dots is not None:
      for x, seeds in zip(xs_all, dots[key]):
        axis.scatter([x + shift + dodge * span / 3] * len(seeds), seeds,
                     s=12, alpha=0.6, color=drawn.lines[0].get_color(),
                     linewidths=0, zorder=3)


def _x_positions(settings_list: list[dict], keys: list[str]):
  """(x values, tick labels, x label, numeric): numbers where one numeric
  key varies, else positions labelled by the settings."""
  if len(keys) == 1:
    values = [s[keys[0]] for s in settings_list]
    if all(isinstance(v, (int, float)) and not isinstance(v, bool)
           for v in values):
      header = SETTING if keys[0] == INFLUENCE_KEY else keys[0]
      return values, [value_text(v) for v in values], header, True
  labels = [", ".join(value_text(s[k]) for k in keys) or "all seeds"
            for s in settings_list]
  header = ", ".join(SETTING if k == INFLUENCE_KEY else k for k in keys)
  return list(range(len(settings_list))), labels, header, False


def _finish(figure, axes_pairs, xs, ticks, xlabel, left_title, ylabel):
  left, right = axes_pairs
  right.axhline(0, color="grey", linewidth=0.8)
  left.set(title=left_title, xlabel=xlabel, ylabel=ylabel)
  right.set(title="Difference in satisfaction F1", xlabel=xlabel,
            ylabel="F1 difference")
  for axis in (left, right):
    axis.set_xticks(xs, ticks)
    if axis.get_legend_handles_labels()[0]:  # a run of one model has none
      axis.legend(fontsize=8)
    axis.grid(alpha=0.3)
  figure.tight_layout()
  buffer = io.BytesIO()
  figure.savefig(buffer, format="png", dpi=80)
  return buffer.getvalue()


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


def _plot_groups(sweep: dict) -> bytes:
  """The groups: each model's mean over seeds and each comparison's, with
  two-level intervals as error bars and the seeds as dots."""
  groups = sweep["groups"]
  keys = [a["key"] for a in sweep["axes"] if a["key"] != SEED_KEY]
  xs, ticks, xlabel, numeric = _x_positions(
      [g["settings"] for g in groups], keys)
  figure = mpl_figure.Figure(figsize=(10, 3.8))
  left, right = figure.subplots(1, 2)
  models = [m for m in study.MODELS if any(m in g["models"] for g in groups)]
  _plot_group_panel(left, xs, [g["models"] for g in groups], models, _name,
                    "mean", numeric)
  comparisons = [f"{a}_vs_{b}" for a, b in study.COMPARISONS
                 if any(f"{a}_vs_{b}" in g["comparisons"] for g in groups)]
  _plot_group_panel(right, xs, [g["comparisons"] for g in groups],
                    comparisons, _comparison_name, "difference", numeric)
  split = (f", {sweep['split_strategy']} split" if sweep["split_strategy"]
           else "")
  return _finish(figure, (left, right), xs, ticks, xlabel,
                 f"User satisfaction F1 over seeds{split}",
                 "F1 (bars: seeds and users; dots: seeds)")


def plot(sweep: dict) -> bytes:
  """sweep.png: satisfaction F1 of every model, and the comparisons'
  differences, with their intervals as error bars: against the runs'
  setting (the influence), or over seeds for each group when `seed` is an
  axis (the seeds as dots)."""
  if sweep.get("groups"):
    return _plot_groups(sweep)
  runs = sweep["runs"]
  xs, ticks, xlabel, numeric = _x_positions(
      [r["settings"] for r in runs], [a["key"] for a in sweep["axes"]])
  figure = mpl_figure.Figure(figsize=(10, 3.8))
  left, right = figure.subplots(1, 2)
  models = [m for m in study.MODELS if any(m in r["satisfaction"]
                                           for r in runs)]
  _plot_lines(left, xs, {
      m: (_name(m), [r["satisfaction"].get(m, {}).get("f1") for r in runs],
          [r["satisfaction"].get(m, {}).get("f1_ci") for r in runs])
      for m in models}, numeric=numeric)
  keys = [f"{a}_vs_{b}" for a, b in study.COMPARISONS
          if any(f"{a}_vs_{b}" in r["comparisons"] for r in runs)]
  _plot_lines(right, xs, {
      k: (_comparison_name(k),
          [r["comparisons"].get(k, {}).get("f1", {}).get("difference")
           for r in runs],
          [r["comparisons"].get(k, {}).get("f1", {}).get("ci")
           for r in runs]) for k in keys}, numeric=numeric)
  split = (f", {sweep['split_strategy']} split" if sweep["split_strategy"]
           else "")
  return _finish(figure, (left, right), xs, ticks, xlabel,
                 f"User satisfaction F1{split}",
                 "F1 (bars: interval over users)")


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
        influences=None, split_strategy: str | None = None,
        log=print, vary=()) -> dict:
  """Runs the study at each point of the grid, then writes the outputs.

  Every point's config is made and checked before the first run. A run
  whose results.json exists is reused; an unfinished one is handed to the
  reproduction again, which resumes it from its checkpoints.

  Args:
    config: the run config shared by every run.
    workdir: the sweep's directory; each run goes to a directory in it
      named by its settings (module docstring).
    influences: user_influence values, the first axis (None: none, or
      DEFAULT_INFLUENCES where `vary` is empty too).
    split_strategy: every run's split (None: the config's).
    log: where progress lines go.
    vary: further axes, "KEY=V1,V2" texts or (key, values) pairs
      (`make_axes`).

  In a run on several processes (ctxtag.distributed) every process runs
  each reproduction; process 0 decides which runs are finished and writes the
  sweep's outputs.

  Returns:
    The sweep dict written to sweep.json; None on processes other than 0.

  Raises:
    errors.ConfigError: for a bad axis or point, before anything runs.
  """
  axes = make_axes(config, vary, influences, split_strategy)
  points = grid(config, axes, split_strategy)
  for number, point in enumerate(points, 1):
    run_dir = os.path.join(workdir, point.path)
    where = (f"{point.describe(axes)} ({number} of {len(points)}):"
             f" {run_dir}")
    if distributed.on_main(f"check {run_dir}", functools.partial(
        finished, run_dir, point.config), share=True):
      log(f"sweep: {where} finished earlier; reusing its results.json")
      continue
    log(f"sweep: {where}")
    start = time.time()
    run_lib.reproduce(point.config, run_dir)
    log(f"sweep: {point.describe(axes)} done in"
        f" {(time.time() - start) / 60:.1f} min")
  return distributed.on_main("write the sweep", functools.partial(
      _collect_and_write, config, workdir, axes, points, split_strategy))


def _dataset_name(config: ml_collections.ConfigDict) -> str:
  """The built dataset's config name: another name, other data."""
  return contextual_tags.config_with_overrides(
      config.dataset.partition("/")[2],
      options_lib.parse(config.dataset_options),
      datasets.split_settings(config)).name


def seed_groups(axes: list[Axis], points: list[Point], workdir: str,
                results: dict) -> list[dict]:
  """sweep.json's groups: the runs of each setting of the other axes.

  Seeds share their test users where their runs' datasets are the same
  (the same dataset name: the split does not depend on `seed`).

  Args:
    axes: the sweep's axes, `seed` among them.
    points: its points.
    workdir: the sweep's directory.
    results: {point path: results dict}.

  Raises:
    errors.UserError: for missing or changed prediction tables, or seeds
      said to share their test users that do not.
  """
  others = [axis for axis in axes if axis.key != SEED_KEY]
  order = _sort_key(others)
  grouped = {}
  for point in points:
    other = {a.key: point.settings[a.key] for a in others}
    grouped.setdefault(json.dumps(other, sort_keys=True), (other, []))[
        1].append(point)
  first = results[points[0].path].get("bootstrap") or {}
  settings = bootstrap.Settings(
      **{k: first[k] for k in ("resamples", "seed", "confidence")
         if k in first})
  groups = []
  for other, members in sorted(grouped.values(),
                               key=lambda item: order(item[0])):
    members = sorted(members, key=lambda p: p.settings[SEED_KEY])
    shared = len({_dataset_name(p.config) for p in members}) == 1
    per_seed, user_ids = [], None
    for point in members:
      ids, values = per_user_values(os.path.join(workdir, point.path),
                                    results[point.path])
      if shared and user_ids is not None and not np.array_equal(ids,
                                                                user_ids):
        raise errors.UserError(
            f"{os.path.join(workdir, point.path)}: its test users differ from"
            f" {os.path.join(workdir, members[0].path)}'s though both were"
            " made on the same dataset; rerun one of them")
      user_ids = ids
      per_seed.append(values)
    groups.append(summarize_group(
        other, [p.settings[SEED_KEY] for p in members], per_seed, settings,
        shared))
  return groups


def _collect_and_write(config, workdir: str, axes: list[Axis],
                       points: list[Point],
                       split_strategy: str | None) -> dict:
  """`run`'s last part: the runs' results, collected and written."""
  results = {p.path: load_results(os.path.join(workdir, p.path))
             for p in points}
  groups = (seed_groups(axes, points, workdir, results)
            if any(a.key == SEED_KEY for a in axes) else None)
  sweep = collect_points(
      axes, {p.path: (p.settings, results[p.path]) for p in points},
      config.dataset, config.dataset_options,
      config.split_strategy if split_strategy is None else split_strategy,
      groups)
  write_outputs(workdir, sweep)
  return sweep
